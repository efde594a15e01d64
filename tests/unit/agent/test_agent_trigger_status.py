"""TriggerMessage(StatusNotification): the reference agent reports every connector again, so a
CSMS that lost a session's TransactionEvent(Ended) can close it (the real agent against an
in-process OCPP CSMS on 127.0.0.1)."""

from __future__ import annotations

from pathlib import Path

import pytest
from ocpp.v201 import call

from chargeward.agent.provision import provision
from chargeward.agent.state import Identity, StateDir
from tests.support.agent_harness import PASSWORD, running_agent, running_csms
from tests.support.fleet import MODEL, Pki
from tests.support.tufrepo import Clock

pytestmark = pytest.mark.timeout(60)


async def test_a_triggered_status_notification_reports_every_connector(tmp_path: Path) -> None:
    pki = Pki.create(tmp_path / "pki")
    provision(
        tmp_path / "charger",
        identity=Identity("CP-TRIG", MODEL, "T", "CP-TRIG"),
        password=PASSWORD,
        roots_pem=pki.root_pem.read_bytes(),
        factory_bundle=pki.bundle(tmp_path / "factory.cwb", "1.0.0", 1),
    )
    charger = StateDir(tmp_path / "charger")
    async with running_csms() as csms, running_agent(charger, csms, Clock(), None) as agent:
        connectors = len(agent.charging.connector_status)
        assert connectors >= 1
        await csms.wait(
            lambda: len(csms.of("StatusNotification")) >= connectors, "the boot's statuses"
        )
        before = len(csms.of("StatusNotification"))
        assert csms.station is not None
        answer = await csms.station.call(
            call.TriggerMessage(requested_message="StatusNotification")
        )
        assert answer.status == "Accepted"
        await csms.wait(
            lambda: len(csms.of("StatusNotification")) >= before + connectors,
            "the triggered statuses",
        )
