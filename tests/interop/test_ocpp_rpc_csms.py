"""Chargeward's reference agent driven by a CSMS it did not write: ocpp-rpc in strict mode
(issue 29).

The real agent (in this process) connects to tests/interop/node/csms.js on 127.0.0.1 with
HTTP Basic auth (security profile 1 over ws://) and downloads from a plain HTTP file server
on 127.0.0.1; only the flash is a temporary directory.  ocpp-rpc validates every CALL the agent
sends and every CALLRESULT it gives against its own copy of the OCPP 2.0.1 schemas: a frame of
Chargeward's that broke a schema would show up as a ``strictValidationFailure`` event.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from chargeward.agent.agent import Agent
from chargeward.agent.config import AgentConfig
from chargeward.agent.location import LAB_LOOPBACK
from chargeward.agent.provision import provision
from chargeward.agent.state import Identity, StateDir
from chargeward.ocpp.base import ocpp_time
from chargeward.ocpp.security_events import OCPP_TYPES
from chargeward.release.bundle import VerifiedBundle, verify_bundle
from tests.interop.node_peer import Event, NodePeer, node_peer
from tests.support.agent_harness import L01_HAPPY, PASSWORD
from tests.support.fleet import MODEL, Pki
from tests.support.tufrepo import Clock, TufRepo

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]
STATION = "CP-INTEROP"


@dataclass(frozen=True)
class Releases:
    pki: Pki
    factory: Path
    update: VerifiedBundle  # 1.1.0, security version 2, signed under the charger's root
    foreign: VerifiedBundle  # 1.1.0 signed under another manufacturer's root


@pytest.fixture(scope="module")
def rel(tmp_path_factory: pytest.TempPathFactory) -> Releases:
    d = tmp_path_factory.mktemp("interop-agent")
    pki, other = Pki.create(d / "pki"), Pki.create(d / "other", name="OTHER")

    def verified(p: Pki, name: str) -> VerifiedBundle:
        return verify_bundle(
            p.bundle(d / f"{name}.cwb", "1.1.0", 2), [p.root_cert], workdir=d / name
        )

    return Releases(
        pki, pki.bundle(d / "factory.cwb", "1.0.0", 1), verified(pki, "u"), verified(other, "f")
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def files(clock: Clock, rel: Releases) -> Iterator[TufRepo]:
    """A plain HTTP file server on 127.0.0.1: the good image, the same with one bit flipped
    in its last byte, and the foreign one."""
    good = rel.update.images[0].file.read_bytes()
    with TufRepo(clock) as server:
        server.serve("fw/good.cwfw", good)
        server.serve("fw/tampered.cwfw", good[:-1] + bytes([good[-1] ^ 0x01]))
        server.serve("fw/foreign.cwfw", rel.foreign.images[0].file.read_bytes())
        yield server


@pytest.fixture
def charger(tmp_path: Path, rel: Releases) -> StateDir:
    provision(
        tmp_path / "charger",
        identity=Identity(STATION, MODEL, "T", STATION),
        password=PASSWORD,
        roots_pem=rel.pki.root_pem.read_bytes(),
        factory_bundle=rel.factory,
    )
    return StateDir(tmp_path / "charger")


@dataclass
class Csms:
    """The ocpp-rpc CSMS process and what it was sent and answered."""

    peer: NodePeer
    url: str
    _refs: itertools.count[int]

    def calls(self, action: str) -> list[Event]:
        """The CALLs of ``action`` the station sent, with how they were answered."""
        return [e for e in self.peer.of("exchange", dir="station->csms") if e["action"] == action]

    def answered(self, action: str) -> list[dict[str, Any]]:
        return [e["request"] for e in self.calls(action) if e["result"] == "CALLRESULT"]

    def statuses(self) -> list[str]:
        return [body["status"] for body in self.answered("FirmwareStatusNotification")]

    async def wait_call(self, action: str, pred: Any = None, timeout: float = 30) -> Event:
        return await self.peer.wait(
            lambda e: (
                e["event"] == "exchange" and e["action"] == action and (pred is None or pred(e))
            ),
            f"{action}",
            timeout,
        )

    def mode(self, action: str, mode: str, code: str = "FormatViolation", times: int = 1) -> None:
        self.peer.send(
            {"cmd": "mode", "action": action, "mode": mode, "code": code, "times": times}
        )

    async def mode_set(self, action: str, mode: str, **kw: Any) -> None:
        start = len(self.peer.events)
        self.mode(action, mode, **kw)
        await self.peer.wait(
            lambda e: e["event"] == "mode-set" and e["action"] == action, "mode", start=start
        )

    async def call(self, action: str, params: dict[str, Any]) -> Event:
        ref = f"c{next(self._refs)}"
        self.peer.send(
            {"cmd": "call", "ref": ref, "station": STATION, "action": action, "params": params}
        )
        return await self.peer.wait(
            lambda e: e["event"] == "call-result" and e["ref"] == ref, f"the answer to {action}"
        )

    async def update_firmware(
        self, location: str, bundle: VerifiedBundle, clock: Clock, request_id: int = 7
    ) -> str:
        answer = await self.call(
            "UpdateFirmware",
            {
                "requestId": request_id,
                "retries": 0,
                "retryInterval": 1,
                "firmware": {
                    "location": location,
                    "retrieveDateTime": ocpp_time(clock()),
                    "signingCertificate": bundle.signing_certificate_pem,
                    "signature": bundle.primary.signature,
                },
            },
        )
        assert answer["result"] == "CALLRESULT", answer
        return str(answer["reply"]["status"])

    def connections(self) -> list[Event]:
        return self.peer.of("connected", station=STATION)

    def security_events(self) -> list[str]:
        return [body["type"] for body in self.answered("SecurityEventNotification")]

    def schema_clean(self) -> None:
        """Nothing the agent sent broke ocpp-rpc's schemas, and nothing was unparseable."""
        assert self.peer.of("strictValidationFailure") == []
        assert self.peer.of("badMessage") == []
        assert self.peer.of("auth-refused") == []


@contextlib.asynccontextmanager
async def running_csms(*args: str) -> AsyncIterator[Csms]:
    async with node_peer("csms.js", "--password", PASSWORD, *args) as peer:
        listening = await peer.wait(lambda e: e["event"] == "listening", "the CSMS to listen")
        yield Csms(peer, f"ws://127.0.0.1:{listening['port']}/ocpp/", itertools.count())


@contextlib.asynccontextmanager
async def running_agent(
    state: StateDir, csms: Csms, clock: Clock, *, wait: bool = True, **config: Any
) -> AsyncIterator[Agent]:
    agent = Agent(
        AgentConfig(
            state_dir=state.root,
            csms_url=csms.url,
            reconnect_delay=0.1,
            reboot_delay=0.1,
            location_policy=LAB_LOOPBACK,  # 127.0.0.1 servers: a lab setting
            **{"response_timeout": 5, **config},
        ),
        clock=clock,
    )
    task = asyncio.create_task(agent.run())
    try:
        if wait:
            await csms.wait_call("StatusNotification", lambda e: e["result"] == "CALLRESULT")
        yield agent
    finally:
        agent.stop()
        await asyncio.wait_for(task, 10)
    assert not task.cancelled() and task.exception() is None


async def until(pred: Callable[[], bool], what: str, timeout: float = 10) -> None:
    """Wait for the agent's own state (it has no event for it) to satisfy ``pred``."""
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def alive(agent: Agent) -> bool:
    return not agent.stop_requested.is_set() and agent.boots >= 1


# -- L01 with good, tampered and untrusted images --------------------------------------------


async def test_l01_good_image(
    charger: StateDir, rel: Releases, files: TufRepo, clock: Clock
) -> None:
    async with running_csms() as csms, running_agent(charger, csms, clock):
        [boot] = csms.answered("BootNotification")
        assert (boot["reason"], boot["chargingStation"]["firmwareVersion"]) == ("PowerUp", "1.0.0")
        answer = await csms.update_firmware(files.url + "fw/good.cwfw", rel.update, clock)
        assert answer == "Accepted"
        await csms.wait_call(
            "FirmwareStatusNotification", lambda e: e["request"]["status"] == "Installed", 60
        )
        assert csms.statuses() == L01_HAPPY
        assert {b["requestId"] for b in csms.answered("FirmwareStatusNotification")} == {7}
        boot = csms.answered("BootNotification")[-1]
        assert (boot["reason"], boot["chargingStation"]["firmwareVersion"]) == (
            "FirmwareUpdate",
            "1.1.0",
        )
        await csms.wait_call("SecurityEventNotification")
        assert "FirmwareUpdated" in csms.security_events()
        assert set(csms.security_events()) <= set(OCPP_TYPES)
        csms.schema_clean()
    assert charger.boot_control().active == "b"


async def test_l01_tampered_image(
    charger: StateDir, rel: Releases, files: TufRepo, clock: Clock
) -> None:
    async with running_csms() as csms, running_agent(charger, csms, clock) as agent:
        answer = await csms.update_firmware(files.url + "fw/tampered.cwfw", rel.update, clock)
        assert answer == "Accepted"
        await csms.wait_call(
            "SecurityEventNotification",
            lambda e: e["request"]["type"] == "InvalidFirmwareSignature",
        )
        await csms.wait_call(
            "FirmwareStatusNotification", lambda e: e["request"]["status"] == "InvalidSignature"
        )
        assert csms.statuses() == ["Downloading", "Downloaded", "InvalidSignature"]
        assert set(csms.security_events()) <= set(OCPP_TYPES)
        assert alive(agent)
        csms.schema_clean()
    assert charger.boot_control().active == "a"
    assert charger.slot_info("b") is None


async def test_l01_untrusted_signing_certificate(
    charger: StateDir, rel: Releases, files: TufRepo, clock: Clock
) -> None:
    async with running_csms() as csms, running_agent(charger, csms, clock) as agent:
        answer = await csms.update_firmware(files.url + "fw/foreign.cwfw", rel.foreign, clock)
        assert answer == "InvalidCertificate"
        await csms.wait_call(
            "SecurityEventNotification",
            lambda e: e["request"]["type"] == "InvalidFirmwareSigningCertificate",
        )
        assert csms.statuses() == []  # L01.FR.02: no download, no status
        assert alive(agent)
        csms.schema_clean()
    assert charger.boot_control().active == "a"


# -- CALLERROR replies to each of the agent's CALLs ------------------------------------------


async def test_a_refused_boot_notification_is_retried(charger: StateDir, clock: Clock) -> None:
    async with running_csms() as csms:
        await csms.mode_set("BootNotification", "error", code="FormatViolation", times=2)
        async with running_agent(charger, csms, clock) as agent:
            boots = csms.calls("BootNotification")
            assert [b["result"] for b in boots] == ["CALLERROR", "CALLERROR", "CALLRESULT"]
            await asyncio.wait_for(agent.registered.wait(), 10)
            assert agent.refused_calls[("BootNotification", "FormatViolation")] == 2
            assert alive(agent)
            csms.schema_clean()


async def test_refused_status_and_heartbeat_leave_the_agent_running(
    charger: StateDir, clock: Clock
) -> None:
    """StatusNotification refused (InternalError) and a Heartbeat refused (GenericError): the
    agent goes on and its next Heartbeat is answered."""
    async with running_csms("--interval", "1") as csms:
        await csms.mode_set("StatusNotification", "error", code="InternalError")
        await csms.mode_set("Heartbeat", "error", code="GenericError")
        async with running_agent(charger, csms, clock, wait=False) as agent:
            await csms.wait_call("StatusNotification", lambda e: e["result"] == "CALLERROR")
            await csms.wait_call("Heartbeat", lambda e: e["result"] == "CALLERROR")
            await csms.wait_call("Heartbeat", lambda e: e["result"] == "CALLRESULT")
            assert agent.refused_calls[("StatusNotification", "InternalError")] == 1
            assert agent.refused_calls[("Heartbeat", "GenericError")] == 1
            assert len(csms.connections()) == 1  # no reconnect for a CALLERROR
            assert alive(agent)
            csms.schema_clean()


async def test_refused_firmware_status_and_security_event_do_not_stop_the_update(
    charger: StateDir, rel: Releases, files: TufRepo, clock: Clock
) -> None:
    """Downloading refused (InternalError): the update carries on to Installed.  The
    FirmwareUpdated event after the reboot refused (FormatViolation): kept in the agent's
    outbox and sent again on its next connection."""
    async with running_csms() as csms, running_agent(charger, csms, clock) as agent:
        await csms.mode_set("FirmwareStatusNotification", "error", code="InternalError")
        await csms.mode_set("SecurityEventNotification", "error", code="FormatViolation")
        answer = await csms.update_firmware(files.url + "fw/good.cwfw", rel.update, clock)
        assert answer == "Accepted"
        await csms.wait_call(
            "FirmwareStatusNotification", lambda e: e["request"]["status"] == "Installed", 60
        )
        refused = [
            e for e in csms.calls("FirmwareStatusNotification") if e["result"] == "CALLERROR"
        ]
        assert [e["request"]["status"] for e in refused] == ["Downloading"]
        assert csms.statuses() == L01_HAPPY[1:]
        [event] = [e for e in csms.calls("SecurityEventNotification") if e["result"] == "CALLERROR"]
        assert event["request"]["type"] == "FirmwareUpdated"
        await until(lambda: [e.type for e in agent.refused_events] == ["FirmwareUpdated"], "kept")

        connections = len(csms.connections())
        csms.peer.send({"cmd": "disconnect", "station": STATION})
        again = await csms.wait_call(
            "SecurityEventNotification", lambda e: e["result"] == "CALLRESULT"
        )
        assert len(csms.connections()) == connections + 1
        assert (again["request"]["type"], again["request"]["techInfo"]) == (
            event["request"]["type"],
            event["request"]["techInfo"],
        )
        assert again["request"]["timestamp"] == event["request"]["timestamp"]
        assert alive(agent)
        csms.schema_clean()
    assert charger.boot_control().active == "b"


# -- a silent CSMS ----------------------------------------------------------------------------


async def test_a_silent_csms_makes_the_agent_reconnect(charger: StateDir, clock: Clock) -> None:
    """The CSMS never answers: after response_timeout the agent drops the connection and
    connects again (with back-off); once the CSMS answers, the agent registers."""
    async with running_csms() as csms:
        await csms.mode_set("*", "silent")
        async with running_agent(charger, csms, clock, wait=False, response_timeout=2) as agent:
            await csms.peer.wait(
                lambda e: e["event"] == "disconnected" and e["station"] == STATION,
                "the agent to drop the silent connection",
                timeout=30,
            )
            await csms.peer.wait(
                lambda e: e["event"] == "connected" and e["connection"] >= 2,
                "the agent to connect again",
                timeout=30,
            )
            silent = [e for e in csms.calls("BootNotification") if e["result"] == "silent"]
            assert silent, csms.peer.events
            await csms.mode_set("*", "normal")
            await csms.wait_call("BootNotification", lambda e: e["result"] == "CALLRESULT", 30)
            await asyncio.wait_for(agent.registered.wait(), 30)
            assert alive(agent)
            csms.schema_clean()
