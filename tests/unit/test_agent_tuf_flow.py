"""The real agent, with TUF enforced, against a small OCPP 2.0.1 CSMS and a TUF repository.

Everything runs in this process on 127.0.0.1: real websockets and OCPP frames, real HTTP
downloads, real python-tuf.  Only the flash is a temporary directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from ocpp.routing import on
from ocpp.v201 import ChargePoint, call, call_result
from ocpp.v201.enums import Action
from tests.support.fleet import MODEL, Pki
from tests.support.tufrepo import Clock, TufRepo
from websockets.asyncio.server import ServerConnection, serve

from chargeward.agent.agent import Agent, AgentConfig
from chargeward.agent.provision import provision
from chargeward.agent.state import Identity, StateDir
from chargeward.agent.tuf_client import RepositoryLimits
from chargeward.errors import ConfigError
from chargeward.model.targets import TargetCustom
from chargeward.ocpp.base import ocpp_time
from chargeward.release.bundle import VerifiedBundle, verify_bundle

PASSWORD = "fixture-password-0123456789"
LIMITS = RepositoryLimits(connect_timeout=2.0, read_timeout=2.0, download_timeout=5.0)
L01_HAPPY = [
    "Downloading",
    "Downloaded",
    "SignatureVerified",
    "Installing",
    "InstallRebooting",
    "Installed",
]


@dataclass
class Csms:
    """Records every CALL from the charger; :meth:`update_firmware` sends one to it."""

    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    station: ChargePoint | None = None
    url: str = ""

    def of(self, action: str) -> list[dict[str, Any]]:
        return [body for name, body in self.calls if name == action]

    async def wait(self, pred: Callable[[], Any], what: str, timeout: float = 15) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if value := pred():
                return value
            await asyncio.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what}; calls: {self.calls}")

    async def update_firmware(
        self, location: str, bundle: VerifiedBundle, retrieve_at: dt.datetime
    ) -> str:
        assert self.station is not None
        result = await self.station.call(
            call.UpdateFirmware(
                request_id=7,
                firmware={
                    "location": location,
                    "retrieve_date_time": ocpp_time(retrieve_at),
                    "signing_certificate": bundle.signing_certificate_pem,
                    "signature": bundle.images[0].signature,
                },
                retries=0,
                retry_interval=1,
            )
        )
        return str(result.status)


def _station(csms: Csms, station_id: str, ws: ServerConnection) -> ChargePoint:
    def record(action: str, body: dict[str, Any]) -> None:
        csms.calls.append((action, body))

    class Station(ChargePoint):  # type: ignore[misc]
        @on(Action.boot_notification)
        def boot(self, **kw: Any) -> call_result.BootNotification:
            record("BootNotification", kw)
            return call_result.BootNotification(
                current_time=ocpp_time(Clock().now), interval=300, status="Accepted"
            )

        @on(Action.status_notification)
        def status(self, **kw: Any) -> call_result.StatusNotification:
            return call_result.StatusNotification()

        @on(Action.heartbeat)
        def heartbeat(self, **kw: Any) -> call_result.Heartbeat:
            return call_result.Heartbeat(current_time=ocpp_time(Clock().now))

        @on(Action.firmware_status_notification)
        def firmware_status(self, **kw: Any) -> call_result.FirmwareStatusNotification:
            record("FirmwareStatusNotification", kw)
            return call_result.FirmwareStatusNotification()

        @on(Action.security_event_notification)
        def security_event(self, **kw: Any) -> call_result.SecurityEventNotification:
            record("SecurityEventNotification", kw)
            return call_result.SecurityEventNotification()

        @on(Action.data_transfer)
        def data_transfer(self, **kw: Any) -> call_result.DataTransfer:
            record("DataTransfer", kw)
            return call_result.DataTransfer(status="Accepted")

    return Station(station_id, ws, 10)


@contextlib.asynccontextmanager
async def running_csms() -> AsyncIterator[Csms]:
    csms = Csms()

    async def handler(ws: ServerConnection) -> None:
        assert ws.request is not None
        station = _station(csms, ws.request.path.rsplit("/", 1)[-1], ws)
        csms.station = station
        with contextlib.suppress(Exception):
            await station.start()

    async with serve(handler, "127.0.0.1", 0, subprotocols=["ocpp2.0.1"]) as server:  # type: ignore[list-item]
        port = next(iter(server.sockets)).getsockname()[1]
        csms.url = f"ws://127.0.0.1:{port}/ocpp/"
        yield csms


@pytest.fixture(scope="module")
def fw(tmp_path_factory: pytest.TempPathFactory) -> tuple[Pki, Path, VerifiedBundle]:
    d = tmp_path_factory.mktemp("tuf-flow")
    pki = Pki.create(d / "pki")
    factory = pki.bundle(d / "factory.cwb", "1.0.0", 1)
    update = verify_bundle(pki.bundle(d / "u.cwb", "1.1.0", 2), [pki.root_cert], workdir=d / "x")
    return pki, factory, update


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def repo(clock: Clock) -> Iterator[TufRepo]:
    with TufRepo(clock) as r:
        yield r


def _charger(
    tmp_path: Path, fw: tuple[Pki, Path, VerifiedBundle], repo: TufRepo, customer: str | None
) -> StateDir:
    pki, factory, _ = fw
    provision(
        tmp_path / "charger",
        identity=Identity("CP-TUF", MODEL, "T", "CP-TUF", customer=customer),
        password=PASSWORD,
        roots_pem=pki.root_pem.read_bytes(),
        factory_bundle=factory,
        tuf_root=repo.root_json(),
    )
    return StateDir(tmp_path / "charger")


def _publish_update(repo: TufRepo, update: VerifiedBundle, **custom: Any) -> str:
    data = update.images[0].file.read_bytes()
    fields: dict[str, Any] = {"release_class": "security", **custom}
    repo.add_firmware(data, TargetCustom((MODEL,), "1.1.0", 2, "main", **fields))
    repo.publish()
    repo.serve("downloads/u-1.1.0.cwfw", data)
    return repo.url + "downloads/u-1.1.0.cwfw"


@contextlib.asynccontextmanager
async def running_agent(
    state: StateDir, csms: Csms, clock: Clock, repository_url: str, check_interval: float = 3600
) -> AsyncIterator[Agent]:
    agent = Agent(
        AgentConfig(
            state_dir=state.root,
            csms_url=csms.url,
            reconnect_delay=0.1,
            response_timeout=5,
            repository_url=repository_url,
            update_check_interval=check_interval,
            repository_limits=LIMITS,
        ),
        clock=clock,
    )
    task = asyncio.create_task(agent.run())
    try:
        await csms.wait(lambda: csms.of("BootNotification"), "BootNotification")
        yield agent
    finally:
        agent.stop()
        await asyncio.wait_for(task, 10)


def _statuses(csms: Csms) -> list[str]:
    return [s["status"] for s in csms.of("FirmwareStatusNotification")]


async def test_listed_update_installs_and_security_release_is_reported_once(
    tmp_path: Path, fw: tuple[Pki, Path, VerifiedBundle], repo: TufRepo, clock: Clock
) -> None:
    state = _charger(tmp_path, fw, repo, customer="fleet-a")
    location = _publish_update(repo, fw[2], customer="fleet-a")
    async with running_csms() as csms, running_agent(state, csms, clock, repo.url) as agent:
        reported = await csms.wait(lambda: csms.of("DataTransfer"), "SecurityUpdateAvailable")
        assert reported[0]["vendor_id"] == "org.chargeward"
        assert reported[0]["message_id"] == "SecurityUpdateAvailable"
        assert json.loads(reported[0]["data"]) == {
            "target": f"firmware/{MODEL}/1.1.0/main.cwfw",
            "version": "1.1.0",
            "security_version": 2,
        }
        assert [u.version for u in await agent.check_for_security_updates()] == ["1.1.0"]
        assert len(csms.of("DataTransfer")) == 1  # reported once

        assert await csms.update_firmware(location, fw[2], clock.now) == "Accepted"
        await csms.wait(lambda: "Installed" in _statuses(csms), "Installed")
        assert _statuses(csms) == L01_HAPPY
    assert state.boot_control().active == "b" and state.rollback_floor() == 2
    assert len(csms.of("DataTransfer")) == 1
    assert state.time_floor() is not None
    assert not [e for e in csms.of("SecurityEventNotification") if "Repository" in e["type"]]


async def test_periodic_check_reports_each_new_security_release(
    tmp_path: Path,
    fw: tuple[Pki, Path, VerifiedBundle],
    repo: TufRepo,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    state = _charger(tmp_path, fw, repo, customer=None)
    _publish_update(repo, fw[2])
    async with running_csms() as csms, running_agent(state, csms, clock, repo.url, 0.05):
        await csms.wait(lambda: csms.of("DataTransfer"), "the first report")
        repo.add_firmware(b"feature", TargetCustom((MODEL,), "1.2.0", 3, "main", "feature"))
        repo.add_firmware(b"fix", TargetCustom((MODEL,), "1.2.1", 3, "main", "security"))
        repo.publish()
        await csms.wait(lambda: len(csms.of("DataTransfer")) == 2, "the second report")
        await asyncio.sleep(0.2)  # a few more checks: nothing is reported twice
    reports = [json.loads(d["data"])["version"] for d in csms.of("DataTransfer")]
    assert reports == ["1.1.0", "1.2.1"]
    assert state.reported_updates() == {
        f"firmware/{MODEL}/1.1.0/main.cwfw",
        f"firmware/{MODEL}/1.2.1/main.cwfw",
    }
    assert not [r for r in caplog.records if r.exc_info or r.levelname == "ERROR"]


async def test_update_for_another_customer_refused_with_security_event(
    tmp_path: Path, fw: tuple[Pki, Path, VerifiedBundle], repo: TufRepo, clock: Clock
) -> None:
    state = _charger(tmp_path, fw, repo, customer="fleet-a")
    location = _publish_update(repo, fw[2], customer="fleet-b")
    async with running_csms() as csms, running_agent(state, csms, clock, repo.url):
        assert await csms.update_firmware(location, fw[2], clock.now) == "Accepted"
        await csms.wait(lambda: "InvalidSignature" in _statuses(csms), "InvalidSignature")
        events = await csms.wait(
            lambda: [
                e
                for e in csms.of("SecurityEventNotification")
                if e["type"] == "FirmwareRepositoryCheckFailed"
            ],
            "FirmwareRepositoryCheckFailed",
        )
    assert _statuses(csms) == ["Downloading", "Downloaded", "InvalidSignature"]
    assert events[0]["tech_info"].startswith("wrong-customer: ")
    assert csms.of("DataTransfer") == []  # not a release for this charger
    assert list(state.downloads.iterdir()) == []
    assert state.boot_control().active == "a" and state.slot_info("b") is None


async def test_unreachable_repository_fails_the_download(
    tmp_path: Path, fw: tuple[Pki, Path, VerifiedBundle], repo: TufRepo, clock: Clock
) -> None:
    state = _charger(tmp_path, fw, repo, customer=None)
    location = _publish_update(repo, fw[2])
    with TufRepo(clock) as gone:
        dead = gone.url
    async with running_csms() as csms, running_agent(state, csms, clock, dead):
        assert await csms.update_firmware(location, fw[2], clock.now) == "Accepted"
        await csms.wait(lambda: "DownloadFailed" in _statuses(csms), "DownloadFailed")
    assert _statuses(csms) == ["Downloading", "Downloaded", "DownloadFailed"]
    assert csms.of("SecurityEventNotification") == []
    assert state.slot_info("b") is None


async def test_failed_update_check_reported_as_security_event(
    tmp_path: Path, fw: tuple[Pki, Path, VerifiedBundle], repo: TufRepo, clock: Clock
) -> None:
    state = _charger(tmp_path, fw, repo, customer=None)
    _publish_update(repo, fw[2])
    repo.publish(targets_signers=repo.keys["targets"][:1])  # under threshold
    async with running_csms() as csms, running_agent(state, csms, clock, repo.url):
        events = await csms.wait(
            lambda: csms.of("SecurityEventNotification"), "FirmwareRepositoryCheckFailed"
        )
    assert events[0]["type"] == "FirmwareRepositoryCheckFailed"
    assert events[0]["tech_info"].startswith("unsigned: ")
    assert csms.of("DataTransfer") == []


def test_tuf_root_without_repository_url_is_a_config_error(
    tmp_path: Path, fw: tuple[Pki, Path, VerifiedBundle], repo: TufRepo
) -> None:
    state = _charger(tmp_path, fw, repo, customer=None)
    with pytest.raises(ConfigError, match="CHARGEWARD_REPOSITORY_URL"):
        Agent(AgentConfig(state_dir=state.root, csms_url="ws://127.0.0.1:9/ocpp/"))
