"""The OCPP 2.0.1 listener: ``ws://HOST:PORT/ocpp/{stationId}``, subprotocol ``ocpp2.0.1``.

Authentication happens during the HTTP upgrade, before any OCPP frame is read (security
profile 1/2: HTTP Basic with username = the station identity in the path).  Unknown stations
and wrong passwords get the same ``401``; a missing subprotocol gets ``400``; any other path
``404``.  Every connected station is a :class:`~chargeward.ocpp.csms.CsmsChargePoint` in the
:class:`Registry`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from chargeward.ocpp.csms import BootInfo, CsmsChargePoint, UpdateAvailable
from chargeward.server import logs, passwords, services
from chargeward.server.db import Database
from chargeward.server.repository import record_available_update

LOG = logging.getLogger("chargeward.csms")
SUBPROTOCOL = "ocpp2.0.1"
PATH_PREFIX = "/ocpp/"
MAX_FRAME = 128 * 1024  # OCPP 2.0.1 messages for this use are far smaller

Clock = Callable[[], dt.datetime]


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class Registry:
    """Stations connected to this process."""

    stations: dict[str, CsmsChargePoint] = field(default_factory=dict)

    def get(self, station_id: str) -> CsmsChargePoint | None:
        return self.stations.get(station_id)


class DbSink:
    """Station reports into the database, one transaction per message."""

    def __init__(self, db: Database, clock: Clock = _utc_now) -> None:
        self.db = db
        self.clock = clock

    async def boot(self, station_id: str, info: BootInfo) -> None:
        async with self.db.session() as s:
            await services.record_boot(
                s,
                station_id,
                reason=info.reason,
                firmware_version=info.firmware_version,
                model=info.model,
                vendor=info.vendor,
                serial_number=info.serial_number,
                now=self.clock(),
            )

    async def heartbeat(self, station_id: str) -> None:
        async with self.db.session() as s:
            await services.touch(s, station_id, now=self.clock())

    async def connector_status(
        self, station_id: str, evse_id: int, connector_id: int, status: str
    ) -> None:
        async with self.db.session() as s:
            await services.record_connector_status(
                s,
                station_id,
                evse_id=evse_id,
                connector_id=connector_id,
                status=status,
                now=self.clock(),
            )

    async def firmware_status(self, station_id: str, status: str, request_id: int | None) -> None:
        async with self.db.session() as s:
            await services.record_firmware_status(
                s, station_id, status=status, request_id=request_id, now=self.clock()
            )

    async def log_status(self, station_id: str, status: str, request_id: int | None) -> None:
        async with self.db.session() as s:
            await logs.record_status(
                s, station_id, status=status, request_id=request_id, now=self.clock()
            )

    async def security_event(
        self, station_id: str, type: str, timestamp: dt.datetime, tech_info: str | None
    ) -> None:
        async with self.db.session() as s:
            await services.record_security_event(
                s, station_id, type=type, timestamp=timestamp, tech_info=tech_info, now=self.clock()
            )

    async def owner_notification(self, station_id: str, notice: dict[str, Any]) -> None:
        async with self.db.session() as s:
            await services.record_owner_notification(s, station_id, notice, now=self.clock())

    async def update_available(self, station_id: str, report: UpdateAvailable) -> None:
        async with self.db.session() as s:
            await record_available_update(
                s,
                station_id,
                {
                    "target": report.target,
                    "version": report.version,
                    "security_version": report.security_version,
                },
                now=self.clock(),
            )


def station_id_from_path(path: str) -> str | None:
    p = urlsplit(path).path
    if not p.startswith(PATH_PREFIX):
        return None
    ident = unquote(p[len(PATH_PREFIX) :])
    try:
        return services.check_station_id(ident)
    except ValueError:
        return None


def basic_credentials(headers: Headers) -> tuple[str, str] | None:
    value = headers.get("Authorization")
    if not value or not value.startswith("Basic "):
        return None
    try:
        decoded = base64.b64decode(value[6:], validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


class CsmsListener:
    """Accepts station connections and runs one ``CsmsChargePoint`` per station."""

    def __init__(
        self,
        db: Database,
        registry: Registry,
        *,
        heartbeat_interval: int = 300,
        clock: Clock = _utc_now,
    ) -> None:
        self.db = db
        self.registry = registry
        self.sink = DbSink(db, clock)
        self.heartbeat_interval = heartbeat_interval
        self.clock = clock
        self.auth_failures = 0

    def _refuse(self, connection: ServerConnection, status: HTTPStatus, text: str) -> Response:
        response = connection.respond(status, text + "\n")
        if status == HTTPStatus.UNAUTHORIZED:
            response.headers["WWW-Authenticate"] = 'Basic realm="chargeward", charset="UTF-8"'
        return response

    async def process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        station_id = station_id_from_path(request.path)
        if station_id is None:
            return self._refuse(
                connection,
                HTTPStatus.NOT_FOUND,
                "no such endpoint; stations connect to /ocpp/{stationId}",
            )
        offered = [
            p.strip()
            for v in request.headers.get_all("Sec-WebSocket-Protocol")
            for p in v.split(",")
        ]
        if SUBPROTOCOL not in offered:
            LOG.warning(
                "%s: refused, subprotocol %s not offered (got %s)",
                station_id,
                SUBPROTOCOL,
                offered or "none",
            )
            return self._refuse(
                connection, HTTPStatus.BAD_REQUEST, f"subprotocol {SUBPROTOCOL} required"
            )
        creds = basic_credentials(request.headers)
        ok = False
        if creds is not None and creds[0] == station_id:
            async with self.db.session() as s:
                stored = await services.password_hash(s, station_id)
            ok = await asyncio.to_thread(passwords.verify_password, stored, creds[1])
        if not ok:
            self.auth_failures += 1
            reason = (
                "no credentials"
                if creds is None
                else "username differs from station identity"
                if creds[0] != station_id
                else "unknown station or wrong password"
            )
            LOG.warning("%s: authentication refused (%s)", station_id, reason)
            return self._refuse(connection, HTTPStatus.UNAUTHORIZED, "authentication failed")
        return None

    async def handler(self, connection: ServerConnection) -> None:
        assert connection.request is not None
        station_id = station_id_from_path(connection.request.path)
        assert station_id is not None  # checked in process_request
        cp = CsmsChargePoint(
            station_id, connection, self.sink, heartbeat_interval=self.heartbeat_interval
        )
        old = self.registry.stations.get(station_id)
        if old is not None:
            LOG.info("%s: new connection replaces the old one", station_id)
            await old._connection.close(1000, "replaced by a new connection")
        self.registry.stations[station_id] = cp
        async with self.db.session() as s:
            await services.set_connected(s, station_id, True, now=self.clock())
        try:
            await cp.start()
        except ConnectionClosed:
            pass
        finally:
            if self.registry.stations.get(station_id) is cp:
                del self.registry.stations[station_id]
                async with self.db.session() as s:
                    await services.set_connected(s, station_id, False, now=self.clock())
            LOG.info("%s: disconnected", station_id)

    async def serve(self, host: str, port: int) -> Server:
        return await serve(
            self.handler,
            host,
            port,
            subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
            process_request=self.process_request,
            max_size=MAX_FRAME,
            ping_interval=60,
            ping_timeout=60,
            logger=logging.getLogger("chargeward.csms.ws"),
        )
