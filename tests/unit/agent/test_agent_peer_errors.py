"""The reference agent against a CSMS's error replies and its TriggerMessage(BootNotification)
(issue 29): a CALLERROR is a normal answer, never the end of the agent or of an update; the
security events go out as OCPP-listed types; a triggered BootNotification follows F06.

The real agent against the in-process OCPP CSMS of tests/support/agent_harness.py and a plain
HTTP file server, all on 127.0.0.1 (no TUF root here).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from ocpp.exceptions import InternalError
from ocpp.v201 import call

from chargeward.agent.agent import Agent
from chargeward.agent.provision import provision
from chargeward.agent.state import Identity, StateDir
from chargeward.ocpp.security_events import CHARGEWARD_TYPES, OCPP_TYPES, on_the_wire
from chargeward.release.bundle import VerifiedBundle, verify_bundle
from tests.support.agent_harness import (
    L01_HAPPY,
    PASSWORD,
    Csms,
    running_agent,
    running_csms,
    statuses,
    update_ended,
)
from tests.support.fleet import MODEL, Pki
from tests.support.tufrepo import Clock, TufRepo

pytestmark = pytest.mark.timeout(90)
AGENT_SOURCES = Path(__file__).parents[3] / "src" / "chargeward" / "agent"


@dataclass(frozen=True)
class Releases:
    pki: Pki
    factory: Path
    update: VerifiedBundle  # 1.1.0, security version 2
    downgrade: VerifiedBundle  # 0.9.0, security version 0: below the factory's floor of 1


@pytest.fixture(scope="module")
def rel(tmp_path_factory: pytest.TempPathFactory) -> Releases:
    d = tmp_path_factory.mktemp("peer-errors")
    pki = Pki.create(d / "pki")

    def verified(name: str, version: str, sv: int) -> VerifiedBundle:
        return verify_bundle(
            pki.bundle(d / f"{name}.cwb", version, sv), [pki.root_cert], workdir=d / name
        )

    return Releases(
        pki,
        pki.bundle(d / "factory.cwb", "1.0.0", 1),
        verified("u", "1.1.0", 2),
        verified("old", "0.9.0", 0),
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def files(clock: Clock, rel: Releases) -> Iterator[TufRepo]:
    """A plain HTTP file server on 127.0.0.1."""
    with TufRepo(clock) as server:
        for name, b in (("u", rel.update), ("old", rel.downgrade)):
            server.serve(f"fw/{name}.cwfw", b.images[0].file.read_bytes())
        yield server


@pytest.fixture
def charger(tmp_path: Path, rel: Releases) -> StateDir:
    provision(
        tmp_path / "charger",
        identity=Identity("CP-PEER", MODEL, "T", "CP-PEER"),
        password=PASSWORD,
        roots_pem=rel.pki.root_pem.read_bytes(),
        factory_bundle=rel.factory,
    )
    return StateDir(tmp_path / "charger")


def agent_alive(agent: Agent) -> bool:
    return not agent.stop_requested.is_set() and agent.boots >= 1


async def reconnect(csms: Csms) -> None:
    """Close the CSMS's side of the connection; the agent connects again."""
    assert csms.station is not None
    before = csms.station
    await before._connection.close()
    await csms.wait(lambda: csms.station is not before, "the agent's next connection")


# -- point 1: a CALLERROR is an answer, not a crash ------------------------------------------


async def test_a_refused_security_event_at_start_up_neither_stops_the_agent_nor_the_update(
    charger: StateDir, rel: Releases, files: TufRepo, clock: Clock
) -> None:
    """After the reboot into 1.1.0 the start-up sends FirmwareUpdated; the CSMS answers it
    with FormatViolation.  The agent commits the slot and reports Installed, and sends the
    event again at its next connection."""
    async with running_csms() as csms, running_agent(charger, csms, clock, None) as agent:
        csms.refuse("SecurityEventNotification")
        assert await csms.update_firmware(files.url + "fw/u.cwfw", rel.update, clock()) == (
            "Accepted"
        )
        await csms.wait(lambda: "Installed" in statuses(csms), "Installed")
        assert statuses(csms) == L01_HAPPY
        [(action, refused)] = csms.refused
        assert (action, refused["type"]) == ("SecurityEventNotification", "FirmwareUpdated")
        assert agent.refused_calls == {("SecurityEventNotification", "FormatViolation"): 1}
        assert [e.type for e in agent.refused_events] == ["FirmwareUpdated"]
        assert csms.of("SecurityEventNotification") == []

        await reconnect(csms)
        [again] = await csms.wait(
            lambda: csms.of("SecurityEventNotification"), "the refused event sent again"
        )
        assert (again["type"], again["tech_info"]) == (refused["type"], refused["tech_info"])
        assert again["timestamp"] == refused["timestamp"]  # the event's own time
        assert agent.refused_events == []
        assert agent_alive(agent)
    assert charger.boot_control().active == "b"


async def test_a_refused_firmware_status_does_not_abandon_the_update(
    charger: StateDir, rel: Releases, files: TufRepo, clock: Clock
) -> None:
    async with running_csms() as csms, running_agent(charger, csms, clock, None) as agent:
        csms.refuse("FirmwareStatusNotification", error=InternalError)
        assert await csms.update_firmware(files.url + "fw/u.cwfw", rel.update, clock()) == (
            "Accepted"
        )
        await csms.wait(lambda: "Installed" in statuses(csms), "Installed")
        assert [body["status"] for _, body in csms.refused] == ["Downloading"]
        assert statuses(csms) == L01_HAPPY[1:]
        assert agent.refused_calls == {("FirmwareStatusNotification", "InternalError"): 1}
        assert agent_alive(agent)
    assert charger.boot_control().active == "b"


async def test_a_security_event_refused_again_and_again_is_given_up_after_three_tries(
    charger: StateDir, rel: Releases, files: TufRepo, clock: Clock
) -> None:
    key = ("SecurityEventNotification", "FormatViolation")
    async with running_csms() as csms, running_agent(charger, csms, clock, None) as agent:
        csms.refuse("SecurityEventNotification", times=5)
        await csms.update_firmware(files.url + "fw/old.cwfw", rel.downgrade, clock())
        await update_ended(agent)
        for tries in (1, 2, 3):
            if tries > 1:
                await reconnect(csms)
            # The agent decides what to keep as it counts the refusal (no await between).
            await csms.wait(lambda n=tries: agent.refused_calls[key] == n, f"refusal {tries}")  # type: ignore[misc]
            kept = [e.type for e in agent.refused_events]
            assert kept == ([] if tries == 3 else ["FirmwareRollbackRefused"]), tries
        assert len(csms.refused) == 3 and csms.of("SecurityEventNotification") == []
        assert agent_alive(agent)
    # Given up on the wire; the security log keeps it.
    assert [e.type for e in agent.security_log.entries()] == ["FirmwareRollbackRefused"]


async def test_a_refused_boot_notification_is_retried_with_back_off(
    charger: StateDir, clock: Clock
) -> None:
    async with running_csms() as csms:
        csms.refuse("BootNotification", times=2)
        async with running_agent(charger, csms, clock, None) as agent:
            assert len(csms.refused) == 2
            assert len(csms.of("BootNotification")) == 1
            await asyncio.wait_for(agent.registered.wait(), 5)
            await csms.wait(lambda: csms.of("StatusNotification"), "the connectors' status")
            assert agent.refused_calls == {("BootNotification", "FormatViolation"): 2}


# -- point 2: Chargeward's security events go out as listed types ----------------------------


def test_every_security_event_the_agent_sends_goes_out_as_a_listed_type() -> None:
    """Every type the agent names in its sources (a string constant ending in Event, or a
    literal passed to _security_event), sent on the wire, is in OCPP 2.0.1's list."""
    sent: set[str] = set()
    for path in AGENT_SOURCES.glob("*.py"):
        text = path.read_text()
        sent |= set(re.findall(r'^[A-Z_]*EVENT = "(\w+)"', text, re.M))
        sent |= set(re.findall(r'_security_event\(\s*"(\w+)"', text))
        sent |= set(re.findall(r'_pending_event = \(\s*"(\w+)"', text))
    assert set(CHARGEWARD_TYPES) <= sent
    for name in sent:
        assert on_the_wire(name, "x")[0] in OCPP_TYPES, name


async def test_a_rollback_refusal_is_sent_as_a_listed_type_and_logged_under_its_name(
    charger: StateDir, rel: Releases, files: TufRepo, clock: Clock
) -> None:
    async with running_csms() as csms, running_agent(charger, csms, clock, None) as agent:
        await csms.update_firmware(files.url + "fw/old.cwfw", rel.downgrade, clock())
        await update_ended(agent)
        [event] = await csms.wait(lambda: csms.of("SecurityEventNotification"), "the event")
    assert event["type"] == "AttemptedReplayAttacks"
    assert event["tech_info"].startswith("FirmwareRollbackRefused: ")
    assert "rollback floor" in event["tech_info"]
    [logged] = agent.security_log.entries()
    assert logged.type == "FirmwareRollbackRefused"
    assert event["tech_info"] == f"FirmwareRollbackRefused: {logged.tech_info}"[:255]


# -- point 3: TriggerMessage(BootNotification), OCPP F06 -------------------------------------


async def test_a_triggered_boot_notification_is_rejected_once_the_boot_was_accepted(
    charger: StateDir, clock: Clock
) -> None:
    async with running_csms() as csms, running_agent(charger, csms, clock, None) as agent:
        await asyncio.wait_for(agent.registered.wait(), 5)
        assert csms.station is not None
        answer = await csms.station.call(call.TriggerMessage(requested_message="BootNotification"))
        assert answer.status == "Rejected"  # OCPP F06.FR.17
        # Handled in order: a later trigger's notification arrives, and no BootNotification.
        before = len(csms.of("StatusNotification"))
        await csms.station.call(call.TriggerMessage(requested_message="StatusNotification"))
        await csms.wait(lambda: len(csms.of("StatusNotification")) > before, "the status")
        assert len(csms.of("BootNotification")) == 1


async def test_a_triggered_boot_notification_while_pending_is_sent_at_once(
    charger: StateDir, clock: Clock
) -> None:
    """Pending with an interval of 300 s: without the trigger the next BootNotification
    would come five minutes later."""
    async with running_csms() as csms:
        csms.boot_status = "Pending"
        async with running_agent(charger, csms, clock, None) as agent:
            assert csms.station is not None and not agent.registered.is_set()
            csms.boot_status = "Accepted"
            answer = await csms.station.call(
                call.TriggerMessage(requested_message="BootNotification")
            )
            assert answer.status == "Accepted"
            await csms.wait(lambda: len(csms.of("BootNotification")) == 2, "the BootNotification")
            await asyncio.wait_for(agent.registered.wait(), 5)
