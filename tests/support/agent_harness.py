"""An in-process OCPP 2.0.1 CSMS and helpers to run the real agent against it and a TUF
repository simulator (tests/support/tufrepo.py), all on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ocpp.exceptions import FormatViolationError, OCPPError
from ocpp.routing import on
from ocpp.v201 import ChargePoint, call, call_result
from ocpp.v201.enums import Action
from websockets.asyncio.server import ServerConnection, serve

from chargeward.agent.agent import Agent
from chargeward.agent.config import AgentConfig
from chargeward.agent.location import LAB_LOOPBACK
from chargeward.agent.provision import provision
from chargeward.agent.state import Identity, StateDir
from chargeward.agent.tuf_client import RepositoryLimits
from chargeward.model.targets import TargetCustom
from chargeward.ocpp.base import ocpp_time
from chargeward.ocpp.security_events import chargeward_event
from chargeward.release.bundle import VerifiedBundle
from tests.support.fleet import MODEL, Pki
from tests.support.tufrepo import Clock, TufRepo

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
    """Records every CALL from the charger; :meth:`update_firmware` sends one to it.

    :meth:`refuse` makes it answer the next CALLs of an action with a CALLERROR (recorded in
    ``refused``, not in ``calls``); ``boot_status`` is its BootNotification answer.
    """

    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    station: ChargePoint | None = None
    url: str = ""
    boot_status: str = "Accepted"
    refused: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    heartbeats: int = 0  # counted, not in ``calls`` (their timing varies)
    _refusals: dict[str, list[OCPPError]] = field(default_factory=dict)

    def of(self, action: str) -> list[dict[str, Any]]:
        return [body for name, body in self.calls if name == action]

    def refuse(self, action: str, times: int = 1, error: type[OCPPError] | None = None) -> None:
        """Answer the next ``times`` CALLs of ``action`` with a CALLERROR (FormatViolation
        unless ``error`` says otherwise)."""
        kind = error or FormatViolationError
        self._refusals.setdefault(action, []).extend(
            kind(description=f"refused by the test CSMS ({i + 1}/{times})") for i in range(times)
        )

    def security_events(self) -> list[dict[str, Any]]:
        """The SecurityEventNotifications received, read as the Chargeward server reads them:
        ``type`` Chargeward's own name (with ``ocpp_type`` the type sent) and ``tech_info``
        the detail after it."""
        events = []
        for body in self.of("SecurityEventNotification"):
            name, detail = chargeward_event(body["type"], body.get("tech_info"))
            events.append({**body, "type": name, "tech_info": detail, "ocpp_type": body["type"]})
        return events

    def _record(self, action: str, body: dict[str, Any]) -> None:
        pending = self._refusals.get(action)
        if pending:
            self.refused.append((action, body))
            raise pending.pop(0)
        self.calls.append((action, body))

    async def wait(self, pred: Callable[[], Any], what: str, timeout: float = 15) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if value := pred():
                return value
            await asyncio.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what}; calls: {self.calls}")

    async def update_firmware(
        self,
        location: str,
        bundle: VerifiedBundle,
        retrieve_at: dt.datetime,
        *,
        request_id: int = 7,
        install_at: dt.datetime | None = None,
        retries: int = 0,
        retry_interval: int = 1,
        signature: str | None = None,
        certificate: str | None = None,
    ) -> str:
        assert self.station is not None
        firmware = {
            "location": location,
            "retrieve_date_time": ocpp_time(retrieve_at),
            "signing_certificate": certificate or bundle.signing_certificate_pem,
            "signature": signature or bundle.primary.signature,
        }
        if install_at is not None:
            firmware["install_date_time"] = ocpp_time(install_at)
        result = await self.station.call(
            call.UpdateFirmware(
                request_id=request_id,
                firmware=firmware,
                retries=retries,
                retry_interval=retry_interval,
            )
        )
        return str(result.status)

    async def set_variable(self, component: str, variable: str, value: str) -> str:
        assert self.station is not None
        result = await self.station.call(
            call.SetVariables(
                set_variable_data=[
                    {
                        "component": {"name": component},
                        "variable": {"name": variable},
                        "attribute_value": value,
                    }
                ]
            )
        )
        return str(result.set_variable_result[0]["attribute_status"])

    def connector(self, evse_id: int) -> str | None:
        """The last status the charger reported for ``evse_id``."""
        reported = [
            b["connector_status"] for b in self.of("StatusNotification") if b["evse_id"] == evse_id
        ]
        return reported[-1] if reported else None


def _station(csms: Csms, station_id: str, ws: ServerConnection) -> ChargePoint:
    record = csms._record

    class Station(ChargePoint):  # type: ignore[misc]
        @on(Action.boot_notification)
        def boot(self, **kw: Any) -> call_result.BootNotification:
            record("BootNotification", kw)
            return call_result.BootNotification(
                current_time=ocpp_time(Clock().now), interval=300, status=csms.boot_status
            )

        @on(Action.status_notification)
        def status(self, **kw: Any) -> call_result.StatusNotification:
            record("StatusNotification", kw)
            return call_result.StatusNotification()

        @on(Action.transaction_event)
        def transaction(self, **kw: Any) -> call_result.TransactionEvent:
            record("TransactionEvent", kw)
            return call_result.TransactionEvent()

        @on(Action.heartbeat)
        def heartbeat(self, **kw: Any) -> call_result.Heartbeat:
            csms.heartbeats += 1
            if csms._refusals.get("Heartbeat"):
                record("Heartbeat", kw)
            return call_result.Heartbeat(current_time=ocpp_time(Clock().now))

        @on(Action.firmware_status_notification)
        def firmware_status(self, **kw: Any) -> call_result.FirmwareStatusNotification:
            record("FirmwareStatusNotification", kw)
            return call_result.FirmwareStatusNotification()

        @on(Action.security_event_notification)
        def security_event(self, **kw: Any) -> call_result.SecurityEventNotification:
            record("SecurityEventNotification", kw)
            return call_result.SecurityEventNotification()

        @on(Action.log_status_notification)
        def log_status(self, **kw: Any) -> call_result.LogStatusNotification:
            record("LogStatusNotification", kw)
            return call_result.LogStatusNotification()

        @on(Action.notify_report)
        def notify_report(self, **kw: Any) -> call_result.NotifyReport:
            record("NotifyReport", kw)
            return call_result.NotifyReport()

        @on(Action.data_transfer)
        def data_transfer(self, **kw: Any) -> call_result.DataTransfer:
            record("DataTransfer", kw)
            return call_result.DataTransfer(status="Accepted")

    return Station(station_id, ws, 10)


@contextlib.asynccontextmanager
async def running_csms(
    first_connection: Callable[[ServerConnection], Awaitable[None]] | None = None,
) -> AsyncIterator[Csms]:
    """The CSMS on a free loopback port; ``first_connection``, when given, handles the first
    connection instead (e.g. one that drops it), and every later one is served normally."""
    csms = Csms()
    connections = 0

    async def handler(ws: ServerConnection) -> None:
        nonlocal connections
        connections += 1
        if first_connection is not None and connections == 1:
            await first_connection(ws)
            return
        assert ws.request is not None
        station = _station(csms, ws.request.path.rsplit("/", 1)[-1], ws)
        csms.station = station
        with contextlib.suppress(Exception):
            await station.start()

    async with serve(handler, "127.0.0.1", 0, subprotocols=["ocpp2.0.1"]) as server:  # type: ignore[list-item]
        port = next(iter(server.sockets)).getsockname()[1]
        csms.url = f"ws://127.0.0.1:{port}/ocpp/"
        yield csms


def provisioned_charger(root: Path, factory: tuple[Pki, Path], station_id: str) -> StateDir:
    """A charger in ``root / "charger"`` on ``factory`` (PKI, factory bundle): identity
    ``station_id``, password ``PASSWORD``."""
    pki, bundle = factory
    provision(
        root / "charger",
        identity=Identity(station_id, MODEL, "T", station_id),
        password=PASSWORD,
        roots_pem=pki.root_pem.read_bytes(),
        factory_bundle=bundle,
    )
    return StateDir(root / "charger")


def make_charger(
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


def publish_update(repo: TufRepo, update: VerifiedBundle, **custom: Any) -> str:
    data = update.images[0].file.read_bytes()
    fields: dict[str, Any] = {"release_class": "security", **custom}
    repo.add_firmware(data, TargetCustom((MODEL,), "1.1.0", 2, "main", **fields))
    repo.publish()
    repo.serve("downloads/u-1.1.0.cwfw", data)
    return repo.url + "downloads/u-1.1.0.cwfw"


def publish_release(repo: TufRepo, release: VerifiedBundle, **custom: Any) -> str:
    """List every image of ``release`` as the server does (signature and components in the
    custom fields); serve the primary for UpdateFirmware and return its URL."""
    m = release.manifest
    components = tuple(i.component for i in release.images)
    for image in release.images:
        fields: dict[str, Any] = {
            "release_class": m.release_class,
            "signature": image.signature,
            "components": components,
            **custom,
        }
        repo.add_firmware(
            image.file.read_bytes(),
            TargetCustom(
                m.hardware_models, m.version, m.security_version, image.component, **fields
            ),
        )
    repo.publish()
    name = f"downloads/u-{m.version}.cwfw"
    repo.serve(name, release.primary.file.read_bytes())
    return repo.url + name


@contextlib.asynccontextmanager
async def running_agent(
    state: StateDir,
    csms: Csms,
    clock: Clock,
    repository_url: str | None,
    check_interval: float = 3600,
    *,
    wait_for: str = "BootNotification",
    **config: Any,
) -> AsyncIterator[Agent]:
    agent = Agent(
        AgentConfig(
            state_dir=state.root,
            csms_url=csms.url,
            reconnect_delay=0.1,
            reboot_delay=0.05,
            response_timeout=5,
            repository_url=repository_url,
            update_check_interval=check_interval,
            repository_limits=LIMITS,
            **{"location_policy": LAB_LOOPBACK, **config},  # 127.0.0.1 servers: a lab setting
        ),
        clock=clock,
    )
    task = asyncio.create_task(agent.run())
    try:
        await csms.wait(lambda: csms.of(wait_for), wait_for)
        yield agent
    finally:
        agent.stop()
        await asyncio.wait_for(task, 10)


async def update_ended(agent: Agent, timeout: float = 15) -> None:
    """Wait until the agent's firmware-update job has ended.  The job sends each status as a
    CALL and waits for its answer, so by then the CSMS holds everything the job reported."""
    task = agent.updates.task
    assert task is not None, "no update job was started"
    done, _ = await asyncio.wait({task}, timeout=timeout)
    assert done, f"the update job did not end within {timeout} s"


def statuses(csms: Csms, request_id: int | None = None) -> list[str]:
    return [
        s["status"]
        for s in csms.of("FirmwareStatusNotification")
        if request_id is None or s.get("request_id") == request_id
    ]
