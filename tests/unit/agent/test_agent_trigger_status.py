"""TriggerMessage(StatusNotification): the reference agent reports every connector again, so a
CSMS that lost a session's TransactionEvent(Ended) can close it; and
TriggerMessage(FirmwareStatusNotification) names the request the agent works on, even before
the CSMS acknowledged any status of it (the real agent against an in-process OCPP CSMS on
127.0.0.1)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from ocpp.routing import on
from ocpp.v201 import ChargePoint, call, call_result
from ocpp.v201.enums import Action
from websockets.asyncio.server import ServerConnection

from chargeward.agent.agent import Agent
from chargeward.agent.config import AgentConfig
from chargeward.agent.location import LAB_LOOPBACK
from chargeward.agent.provision import provision
from chargeward.agent.state import Identity, StateDir
from chargeward.release.bundle import verify_bundle
from tests.support.agent_harness import PASSWORD, running_agent, running_csms
from tests.support.fleet import MODEL, Pki
from tests.support.tufrepo import Clock

pytestmark = pytest.mark.timeout(60)


def provisioned(tmp_path: Path, station_id: str) -> Pki:
    """A charger provisioned in ``tmp_path / "charger"`` on factory firmware 1.0.0."""
    pki = Pki.create(tmp_path / "pki")
    provision(
        tmp_path / "charger",
        identity=Identity(station_id, MODEL, "T", station_id),
        password=PASSWORD,
        roots_pem=pki.root_pem.read_bytes(),
        factory_bundle=pki.bundle(tmp_path / "factory.cwb", "1.0.0", 1),
    )
    return pki


async def test_a_triggered_status_notification_reports_every_connector(tmp_path: Path) -> None:
    provisioned(tmp_path, "CP-TRIG")
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


async def test_a_triggered_firmware_status_names_the_request_at_work_though_unacknowledged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CSMS asks after an UpdateFirmware whose answer it lost (issue 28): the agent took
    request 7 and waits for its retrieve time, but no status of it reached the CSMS (it was
    stuck on a connection that died; the agent records a status only once acknowledged).
    Answering from the acknowledged record said ``Idle``, and the CSMS sent a second
    request; the agent answers what it works on."""
    pki = provisioned(tmp_path, "CP-TRIG")
    update = verify_bundle(
        pki.bundle(tmp_path / "u.cwb", "1.1.0", 2),
        [pki.root_cert],
        workdir=tmp_path / "x",
        now=dt.datetime.now(dt.UTC),
    )
    charger = StateDir(tmp_path / "charger")
    clock = Clock()
    async with running_csms() as csms, running_agent(charger, csms, clock, None) as agent:
        monkeypatch.setattr(agent.state, "set_last_status", lambda *_: None)  # never acknowledged
        later = clock.now + dt.timedelta(hours=1)
        location = "http://127.0.0.1:9/fw.cwb"  # not fetched before its retrieve time
        assert await csms.update_firmware(location, update, later, request_id=7) == "Accepted"
        await csms.wait(lambda: csms.of("FirmwareStatusNotification"), "DownloadScheduled")
        assert csms.station is not None
        answer = await csms.station.call(
            call.TriggerMessage(requested_message="FirmwareStatusNotification")
        )
        assert answer.status == "Accepted"
        reports = await csms.wait(
            lambda: csms.of("FirmwareStatusNotification")[1:], "the triggered status"
        )
        assert reports[0] == {"status": "DownloadScheduled", "request_id": 7}


async def test_a_report_in_flight_when_the_csms_connection_drops_is_sent_again_at_once(
    tmp_path: Path,
) -> None:
    """The CSMS node holding the charger dies while a FirmwareStatusNotification waits for its
    answer.  The OCPP library is not woken by a close: the report sat out the whole response
    timeout (60 s in the chaos test) before it went to the next node.  Now it goes out on the
    next connection as soon as the agent reconnects, with a 30 s response timeout."""
    provisioned(tmp_path, "CP-DROP")
    doomed: list[ChargePoint] = []
    booted = asyncio.Event()

    async def dies_on_a_firmware_status(ws: ServerConnection) -> None:
        class Doomed(ChargePoint):  # type: ignore[misc]
            @on(Action.boot_notification)
            def boot(self, **_: Any) -> call_result.BootNotification:
                booted.set()
                now = dt.datetime.now(dt.UTC).isoformat()
                return call_result.BootNotification(
                    current_time=now, interval=300, status="Accepted"
                )

            @on(Action.status_notification)
            def status(self, **_: Any) -> call_result.StatusNotification:
                return call_result.StatusNotification()

            @on(Action.firmware_status_notification)
            async def firmware_status(self, **_: Any) -> call_result.FirmwareStatusNotification:
                await ws.close()  # the node is gone before it answers
                return call_result.FirmwareStatusNotification()

        cp = Doomed("CP-DROP", ws, 10)
        doomed.append(cp)
        with contextlib.suppress(Exception):
            await cp.start()

    async with running_csms(dies_on_a_firmware_status) as csms:
        agent = Agent(
            AgentConfig(
                state_dir=tmp_path / "charger",
                csms_url=csms.url,
                reconnect_delay=0.1,
                reboot_delay=0.05,
                response_timeout=30,
                location_policy=LAB_LOOPBACK,
            ),
            clock=Clock(),
        )
        task = asyncio.create_task(agent.run())
        try:
            await asyncio.wait_for(booted.wait(), 15)
            answer = await doomed[0].call(
                call.TriggerMessage(requested_message="FirmwareStatusNotification")
            )
            assert answer.status == "Accepted"
            loop = asyncio.get_running_loop()
            dropped = loop.time()
            await csms.wait(
                lambda: csms.of("FirmwareStatusNotification"), "the report on the next connection"
            )  # 15 s at most: half the response timeout
            assert loop.time() - dropped < 15
            assert csms.of("FirmwareStatusNotification")[0]["status"] == "Idle"
        finally:
            agent.stop()
            await asyncio.wait_for(task, 10)
