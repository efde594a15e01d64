"""An in-process OCPP 1.6J CSMS (the ``ocpp`` library's v16 ChargePoint, strict schema
validation: every message the agent sends is checked against the 1.6 and Security Whitepaper
schemas) and helpers to run the real agent as a 1.6 station against it, on 127.0.0.1.

The 1.6 counterpart of :mod:`tests.support.agent_harness`."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import itertools
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from ocpp.routing import on
from ocpp.v16 import ChargePoint, call, call_result
from ocpp.v16.enums import Action
from websockets.asyncio.server import ServerConnection, serve

from chargeward.agent.agent import Agent
from chargeward.agent.config import AgentConfig
from chargeward.agent.location import LAB_LOOPBACK
from chargeward.agent.state import StateDir
from chargeward.ocpp.base import ocpp_time
from chargeward.ocpp.v16_map import legacy_location
from chargeward.release.bundle import VerifiedBundle
from tests.support.tufrepo import Clock


@dataclass
class Csms16:
    """Records every CALL from the charger (keys in snake_case) and the Basic auth password
    of each connection; its methods send CALLs to the charger."""

    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    station: ChargePoint | None = None
    url: str = ""
    passwords: list[str] = field(default_factory=list)  # per connection, in order
    connections: list[ServerConnection] = field(default_factory=list)
    _transaction_ids: Any = field(default_factory=lambda: itertools.count(101))

    def of(self, action: str) -> list[dict[str, Any]]:
        return [body for name, body in self.calls if name == action]

    def firmware_statuses(self, action: str = "SignedFirmwareStatusNotification") -> list[str]:
        return [b["status"] for b in self.of(action)]

    async def wait(self, pred: Callable[[], Any], what: str, timeout: float = 10) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if value := pred():
                return value
            await asyncio.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what}; calls: {self.calls}")

    async def send(self, payload: Any) -> Any:
        """A CALL to the charger; raises the CALLERROR's OCPPError."""
        assert self.station is not None
        return await self.station.call(payload, suppress=False)

    async def signed_update_firmware(
        self,
        location: str,
        bundle: VerifiedBundle,
        retrieve_at: dt.datetime,
        *,
        request_id: int = 7,
        certificate: str | None = None,
    ) -> str:
        result = await self.send(
            call.SignedUpdateFirmware(
                request_id=request_id,
                firmware={
                    "location": location,
                    "retrieve_date_time": ocpp_time(retrieve_at),
                    "signing_certificate": certificate or bundle.signing_certificate_pem,
                    "signature": bundle.primary.signature,
                },
                retries=0,
                retry_interval=1,
            )
        )
        return str(result.status)

    async def update_firmware(self, location: str, retrieve_at: dt.datetime) -> None:
        """Plain 1.6 UpdateFirmware (its answer has no status)."""
        await self.send(
            call.UpdateFirmware(location=location, retrieve_date=ocpp_time(retrieve_at), retries=0)
        )


def signed_location(url: str, bundle: VerifiedBundle) -> str:
    """``url`` with the primary image's signature and certificate, for a legacy station."""
    return legacy_location(url, bundle.primary.signature, bundle.signing_certificate_pem)


def _station(csms: Csms16, station_id: str, ws: ServerConnection) -> ChargePoint:
    def record(action: str, kw: dict[str, Any]) -> None:
        csms.calls.append((action, kw))

    class Station(ChargePoint):  # type: ignore[misc]
        @on(Action.boot_notification)
        def on_boot(self, **kw: Any) -> call_result.BootNotification:
            record("BootNotification", kw)
            return call_result.BootNotification(
                current_time=ocpp_time(Clock().now), interval=300, status="Accepted"
            )

        @on(Action.status_notification)
        def on_status(self, **kw: Any) -> call_result.StatusNotification:
            record("StatusNotification", kw)
            return call_result.StatusNotification()

        @on(Action.heartbeat)
        def on_heartbeat(self, **kw: Any) -> call_result.Heartbeat:
            return call_result.Heartbeat(current_time=ocpp_time(Clock().now))

        @on(Action.start_transaction)
        def on_start(self, **kw: Any) -> call_result.StartTransaction:
            record("StartTransaction", kw)
            return call_result.StartTransaction(
                transaction_id=next(csms._transaction_ids), id_tag_info={"status": "Accepted"}
            )

        @on(Action.stop_transaction)
        def on_stop(self, **kw: Any) -> call_result.StopTransaction:
            record("StopTransaction", kw)
            return call_result.StopTransaction()

        @on(Action.firmware_status_notification)
        def on_firmware_status(self, **kw: Any) -> call_result.FirmwareStatusNotification:
            record("FirmwareStatusNotification", kw)
            return call_result.FirmwareStatusNotification()

        @on(Action.signed_firmware_status_notification)
        def on_signed_firmware_status(
            self, **kw: Any
        ) -> call_result.SignedFirmwareStatusNotification:
            record("SignedFirmwareStatusNotification", kw)
            return call_result.SignedFirmwareStatusNotification()

        @on(Action.security_event_notification)
        def on_security_event(self, **kw: Any) -> call_result.SecurityEventNotification:
            record("SecurityEventNotification", kw)
            return call_result.SecurityEventNotification()

        @on(Action.log_status_notification)
        def on_log_status(self, **kw: Any) -> call_result.LogStatusNotification:
            record("LogStatusNotification", kw)
            return call_result.LogStatusNotification()

        @on(Action.sign_certificate)
        def on_sign_certificate(self, **kw: Any) -> call_result.SignCertificate:
            record("SignCertificate", kw)
            return call_result.SignCertificate(status="Accepted")

        @on(Action.data_transfer)
        def on_data_transfer(self, **kw: Any) -> call_result.DataTransfer:
            record("DataTransfer", kw)
            return call_result.DataTransfer(status="Accepted")

    return Station(station_id, ws, 10)


@contextlib.asynccontextmanager
async def running_csms16() -> AsyncIterator[Csms16]:
    """The 1.6 CSMS on a free loopback port (subprotocol ``ocpp1.6`` only)."""
    csms = Csms16()

    async def handler(ws: ServerConnection) -> None:
        assert ws.request is not None
        auth = ws.request.headers.get("Authorization", "")
        csms.passwords.append(base64.b64decode(auth.removeprefix("Basic ")).decode().split(":")[1])
        csms.connections.append(ws)
        station = _station(csms, ws.request.path.rsplit("/", 1)[-1], ws)
        csms.station = station
        with contextlib.suppress(Exception):
            await station.start()

    async with serve(handler, "127.0.0.1", 0, subprotocols=["ocpp1.6"]) as server:  # type: ignore[list-item]
        port = next(iter(server.sockets)).getsockname()[1]
        csms.url = f"ws://127.0.0.1:{port}/ocpp/"
        yield csms


@contextlib.asynccontextmanager
async def running_agent16(
    state: StateDir,
    csms: Csms16,
    clock: Clock,
    *,
    legacy: bool = False,
    wait_for: str = "StatusNotification",
    **config: Any,
) -> AsyncIterator[Agent]:
    """The real agent as a 1.6 station (whitepaper, or ``legacy``) until the CSMS has a
    ``wait_for`` (by default: booted, connectors reported)."""
    agent = Agent(
        AgentConfig(
            state_dir=state.root,
            csms_url=csms.url,
            reconnect_delay=0.1,
            reboot_delay=0.05,
            response_timeout=5,
            ocpp_version="1.6",
            legacy_firmware_update=legacy,
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


class UploadServer:
    """Takes log uploads (HTTP PUT/POST) and answers 201."""

    def __init__(self) -> None:
        self.bodies: dict[str, bytes] = {}
        self.url = ""

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v for k, _, v in (x.partition(": ") for x in lines[1:])}
        self.bodies[lines[0].split()[1]] = await reader.readexactly(int(headers["content-length"]))
        writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()


@contextlib.asynccontextmanager
async def upload_server() -> AsyncIterator[UploadServer]:
    srv = UploadServer()
    server = await asyncio.start_server(srv._handle, "127.0.0.1", 0)
    srv.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    async with server:
        yield srv
        server.close()
