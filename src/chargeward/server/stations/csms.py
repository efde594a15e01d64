"""The OCPP listener: ``wss://HOST:PORT/ocpp/{stationId}``, subprotocol ``ocpp2.0.1`` or
``ocpp1.6`` (a station offering both gets 2.0.1; ADR 0039).

Authentication happens during the HTTP upgrade, before any OCPP frame is read, by the security
profile configured for the station (:func:`~chargeward.server.stations.station_security.admit`):
profile 2 = TLS + HTTP Basic with username = the station identity in the path; profile 3 =
TLS with a client certificate from the charger CA, valid now, a client leaf, CN = station
identity, and the station's registered certificate, not revoked or superseded
(:mod:`~chargeward.server.stations.station_certificates`, ADR 0022); profile 1
(plain ws + Basic) only on a listener started with ``allow_profile_1`` for a lab.  The TLS
handshake already refused old TLS versions, other cipher suites and certificates from another
CA (:mod:`chargeward.server.stations.tls`).  Every refusal gets the same ``401``, its reason goes to
the log (and, for a certificate of a known station, to the audit log); a missing subprotocol
(neither ``ocpp2.0.1`` nor ``ocpp1.6``) gets ``400``; any other path ``404``.  Failed logins
are counted per station and address
(:mod:`chargeward.server.auth.throttle`): a locked caller gets ``429`` with ``Retry-After`` before
its password is looked at.  Every connected station is a
:class:`~chargeward.ocpp.csms.CsmsChargePoint` in the :class:`Registry`, or, for OCPP 1.6J, a
:class:`~chargeward.ocpp.csms16.Csms16ChargePoint` with the same command methods.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import ssl
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Protocol, cast
from urllib.parse import unquote, urlsplit

from cryptography import x509
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from chargeward.errors import Conflict, TransportError
from chargeward.limits import DEFAULT_SERVER_LIMITS, ServerLimits
from chargeward.logging_setup import websocket_logger
from chargeward.ocpp.csms import CsmsChargePoint
from chargeward.ocpp.v16_map import SUBPROTOCOL_16, SUBPROTOCOL_201
from chargeward.server.auth import passwords
from chargeward.server.auth.throttle import StationThrottle
from chargeward.server.common.metrics import MeteredChargePoint, MeteredChargePoint16, Metrics
from chargeward.server.fleet import station_registry
from chargeward.server.proxy import Proxy
from chargeward.server.stations import station_certificates, station_security
from chargeward.server.stations.group_commit import GroupCommit
from chargeward.server.stations.sink import Clock, DbSink, utc_now
from chargeward.server.store.db import Database
from chargeward.server.store.tables import Station

LOG = logging.getLogger("chargeward.csms")
SUBPROTOCOL = SUBPROTOCOL_201
# What the listener accepts, the preferred first: a station offering both gets 2.0.1.
SUBPROTOCOLS = (SUBPROTOCOL_201, SUBPROTOCOL_16)
OCPP_VERSIONS = {SUBPROTOCOL_201: "2.0.1", SUBPROTOCOL_16: "1.6"}
PATH_PREFIX = "/ocpp/"


@dataclass
class Registry:
    """Stations connected to this process, and the certificate serial of each one's last
    login (so a revocation can end the session it opened)."""

    stations: dict[str, CsmsChargePoint] = field(default_factory=dict)
    certificate_serials: dict[str, str] = field(default_factory=dict)

    def get(self, station_id: str) -> CsmsChargePoint | None:
        return self.stations.get(station_id)


@dataclass(frozen=True)
class ListenerTimeouts:
    """How long a connection may take to open, and to answer a ping once open.

    A client that does not finish the TLS handshake and the HTTP upgrade within
    ``open_timeout`` seconds is disconnected (slow-loris: a request sent a byte at a time, a
    socket that sends nothing), as is one that leaves a ping unanswered ``ping_timeout``
    seconds after it was sent (every ``ping_interval`` seconds).  The open timeout allows for
    a reconnect storm, in which upgrades queue behind the password checks.
    """

    open_timeout: float = 30.0
    ping_interval: float = 60.0
    ping_timeout: float = 60.0


class Presence(Protocol):
    """Where connections are recorded for other server processes (``server.cluster.Node``)."""

    async def connected(self, station_id: str, writes: GroupCommit | None = None) -> None: ...
    async def disconnected(self, station_id: str) -> bool: ...  # True: held by another node

    @property
    def presence_id(self) -> str | None: ...  # this node's id in a cluster, else None


def station_id_from_path(path: str) -> str | None:
    p = urlsplit(path).path
    if not p.startswith(PATH_PREFIX):
        return None
    ident = unquote(p[len(PATH_PREFIX) :])
    try:
        return station_registry.check_station_id(ident)
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


def _address(connection: ServerConnection) -> str:
    peer = connection.remote_address
    return str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"


def _password_problem(headers: Headers, station_id: str) -> str:
    creds = basic_credentials(headers)
    if creds is None:
        return "no credentials"
    if creds[0] != station_id:
        return "username differs from station identity"
    return station_security.WRONG_PASSWORD


class CsmsListener:
    """Accepts station connections and runs one ``CsmsChargePoint`` per station."""

    def __init__(
        self,
        db: Database,
        registry: Registry,
        *,
        heartbeat_interval: int = 300,
        clock: Clock = utc_now,
        ssl_context: ssl.SSLContext | None = None,
        charger_ca: station_security.ChargerCa | None = None,
        allow_profile_1: bool = False,
        metrics: Metrics | None = None,
        presence: Presence | None = None,
        timeouts: ListenerTimeouts | None = None,
        throttle: StationThrottle | None = None,
        limits: ServerLimits = DEFAULT_SERVER_LIMITS,
        proxy: Proxy | None = None,
    ) -> None:
        self.db = db
        self.proxy = proxy  # proxy mode: each station relayed to an upstream CSMS (ADR 0040)
        self.limits = limits
        self.registry = registry
        self.timeouts = timeouts or ListenerTimeouts()
        self.metrics = metrics or Metrics()
        self.presence = presence  # scale-out: which node holds which station
        self.sink = DbSink(db, clock, charger_ca)
        self.heartbeat_interval = heartbeat_interval
        self.clock = clock
        self.ssl_context = ssl_context
        self.charger_ca = charger_ca
        self.allow_profile_1 = allow_profile_1
        self.auth_failures = 0
        self.refusals: list[tuple[str, str]] = []  # (station id, reason), newest last
        # certificate serial of the last login, per station
        self.connection_serials: dict[str, str] = registry.certificate_serials
        self.booted_stations: set[str] = set()  # BootNotification accepted in this process
        self.recent_logins = passwords.RecentLogins()  # reconnects skip argon2 (ADR 0009)
        self.throttle = throttle or StationThrottle()  # failed logins (ADR 0015)

    def _peer_certificate(self, connection: ServerConnection) -> x509.Certificate | None:
        ssl_object = connection.transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        return x509.load_der_x509_certificate(der) if der else None

    async def _presented(
        self,
        request: Request,
        station_id: str,
        tls: bool,
        cert: x509.Certificate | None,
        auth: station_security.StationAuth | None,
    ) -> station_security.Presented:
        problem = None
        if cert is not None:
            cas = list(self.charger_ca.certificates) if self.charger_ca else []
            problem = station_security.certificate_problem(cert, cas, station_id, self.clock())
            if problem is None and auth is not None:  # ADR 0022: only the registered one
                problem = station_certificates.registry_problem(
                    station_certificates.CertificateId.of(cert),
                    auth.certificates,
                    required=auth.profile == 3,
                )
        ok = False
        creds = basic_credentials(request.headers)
        profile = auth.profile if auth is not None else 2
        if profile != 3 and creds is not None and creds[0] == station_id:
            ok = await station_security.check_password(
                self.db, station_id, creds[1], auth, self.recent_logins
            )
        return station_security.Presented(tls, cert, problem, ok)

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
        if not any(p in offered for p in SUBPROTOCOLS):
            wanted = " or ".join(SUBPROTOCOLS)
            LOG.warning(
                "%s: refused, subprotocol %s not offered (got %s)",
                station_id,
                wanted,
                offered or "none",
            )
            return self._refuse(
                connection, HTTPStatus.BAD_REQUEST, f"subprotocol {wanted} required"
            )
        address = _address(connection)
        wait = self.throttle.wait(station_id, address)
        if wait is not None:  # before any database read or argon2 check
            self.metrics.auth_failures.inc()
            self.refusals.append((station_id, "too many failed logins"))
            del self.refusals[:-100]
            LOG.warning("%s: refused, too many failed logins from %s", station_id, address)
            response = self._refuse(
                connection,
                HTTPStatus.TOO_MANY_REQUESTS,
                f"too many failed logins, retry after {wait} s",
            )
            response.headers["Retry-After"] = str(wait)
            return response
        tls = connection.transport.get_extra_info("ssl_object") is not None
        cert = self._peer_certificate(connection) if tls else None
        cert_id = station_certificates.CertificateId.of(cert) if cert is not None else None
        auth = await self.sink.writes.run(
            lambda s: station_security.station_auth(s, station_id, cert_id),
            station_id=station_id,
        )
        profile = auth.profile if auth is not None else 2
        seen = await self._presented(request, station_id, tls, cert, auth)
        if auth is None:  # unknown: the same answer (and argon2 effort) as a wrong password
            reason: str | None = _password_problem(request.headers, station_id)
        else:
            reason = station_security.admit(profile, seen, allow_profile_1=self.allow_profile_1)
            if reason == station_security.WRONG_PASSWORD:
                reason = _password_problem(request.headers, station_id)
        if reason is not None:
            self.auth_failures += 1
            self.metrics.auth_failures.inc()
            self.refusals.append((station_id, reason))
            del self.refusals[:-100]
            LOG.warning("%s: authentication refused (%s)", station_id, reason)
            self.throttle.failed(station_id, address)
            if auth is not None and (seen.certificate_problem is not None or profile == 3):
                await station_security.audit_refusal(self.db, station_id, reason, self.clock())
            return self._refuse(connection, HTTPStatus.UNAUTHORIZED, "authentication failed")
        self.throttle.succeeded(station_id, address)
        if cert_id is None:
            self.connection_serials.pop(station_id, None)
        else:
            self.connection_serials[station_id] = cert_id.serial
            if auth is not None and station_certificates.needs_login_write(
                cert_id, auth.certificates
            ):  # a renewal confirmed by its first use (OCPP A02)
                await station_certificates.record_login(self.db, station_id, cert_id, self.clock())
        return None

    async def handler(self, connection: ServerConnection) -> None:
        assert connection.request is not None
        station_id = station_id_from_path(connection.request.path)
        assert station_id is not None  # checked in process_request
        subprotocol = str(connection.subprotocol or SUBPROTOCOL)
        metered = MeteredChargePoint16 if subprotocol == SUBPROTOCOL_16 else MeteredChargePoint
        # Proxy mode: the charge point reads and writes through the relay (ADR 0040).
        relay = self.proxy.relay(station_id, subprotocol, connection) if self.proxy else None
        # A 1.6 charge point has CsmsChargePoint's command methods, same signatures (ADR 0039).
        cp = cast(
            CsmsChargePoint,
            metered(
                station_id,
                connection if relay is None else relay.connection,
                self.sink,
                metrics=self.metrics,
                heartbeat_interval=self.heartbeat_interval,
            ),
        )
        # A reconnect without a reboot needs no new BootNotification (e.g. to use a renewed
        # certificate, OCPP A02, or after this server restarted): a station whose
        # BootNotification was ever accepted stays accepted.
        cp.booted = station_id in self.booted_stations
        old = self.registry.stations.get(station_id)
        if old is not None:
            LOG.info("%s: new connection replaces the old one", station_id)
            await old._connection.close(1000, "replaced by a new connection")
        self.registry.stations[station_id] = cp
        # Presence first: a node this station just left sees it held here before it would
        # record the disconnection (station_registry.set_connected).
        if self.presence is not None:
            await self.presence.connected(station_id, self.sink.writes)
        booted_before = await self.sink.connected(
            station_id, True, ocpp_version=OCPP_VERSIONS[subprotocol]
        )
        cp.booted = cp.booted or booted_before
        # A reconnect without a reboot: sessions the station may have ended while its
        # TransactionEvent was lost are closed by its connector statuses, so ask for them.
        asking = asyncio.create_task(self._ask_connectors(cp)) if cp.booted else None
        if relay is not None:
            relay.start()
        try:
            await cp.start()
        except ConnectionClosed:
            pass
        finally:
            if relay is not None:
                await relay.stop()
                self.proxy.ended(relay)  # type: ignore[union-attr]
            if asking is not None:
                asking.cancel()
            if cp.booted:
                self.booted_stations.add(station_id)
            if self.registry.stations.get(station_id) is cp:
                del self.registry.stations[station_id]
                elsewhere = self.presence is not None and await self.presence.disconnected(
                    station_id
                )
                if not elsewhere:  # it may have reconnected to another node already
                    holder = self.presence.presence_id if self.presence is not None else None
                    await self.sink.connected(station_id, False, node_id=holder)
                    if station_id in self.registry.stations:
                        # It reconnected here while that write waited for its batch (a
                        # charger back from a reboot in under a second): its "connected"
                        # may have been committed first.  Connected it is.
                        await self.sink.connected(station_id, True)
            LOG.info("%s: disconnected", station_id, extra={"station_id": station_id})

    async def _ask_connectors(self, cp: CsmsChargePoint) -> None:
        """TriggerMessage(StatusNotification) to a station the server holds sessions for: an
        ``Available`` connector closes the session there (station_reports)."""
        async with self.db.snapshot() as s:
            row = await s.get(Station, cp.id)
            if row is None or not row.active_transactions:
                return
        try:
            answer = await cp.trigger_message("StatusNotification")
        except (TransportError, Conflict) as e:
            LOG.info("%s: cannot ask for connector status: %s", cp.id, e)
            return
        LOG.info("%s: asked for connector status (sessions open): %s", cp.id, answer)

    async def serve(self, host: str, port: int) -> Server:
        return await serve(
            self.handler,
            host,
            port,
            subprotocols=list(SUBPROTOCOLS),  # type: ignore[arg-type]
            process_request=self.process_request,
            ssl=self.ssl_context,
            max_size=self.limits.frame_bytes,
            # No permessage-deflate: OCPP frames are small, and each compressing connection
            # keeps ~50 KiB of zlib state (benchmarks/bench_connections.py).
            compression=None,
            # A reconnect storm (every station after an outage) must queue, not be dropped.
            backlog=4096,
            open_timeout=self.timeouts.open_timeout,  # also the TLS handshake's
            ping_interval=self.timeouts.ping_interval,
            ping_timeout=self.timeouts.ping_timeout,
            logger=websocket_logger("chargeward.csms.ws"),  # no Basic auth in debug logs
        )
