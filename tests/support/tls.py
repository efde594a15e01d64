"""Test support for OCPP security profiles: a charger CA, a CSMS server certificate for
127.0.0.1, station certificates (good and bad), and the real OCPP listener with TLS in this
process.  Generated per test; the passphrase protects generated fixtures only."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import queue
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from chargeward.agent.agent import Agent
from chargeward.agent.config import AgentConfig
from chargeward.agent.location import LAB_LOOPBACK
from chargeward.agent.provision import provision
from chargeward.agent.state import Identity, StateDir
from chargeward.crypto import (
    certificate_pem,
    create_root_ca,
    generate_key,
    load_certificate,
    load_signer,
)
from chargeward.crypto.keys import Signer
from chargeward.crypto.sealing import generate_device_key_pair
from chargeward.crypto.tls import issue_server_certificate, issue_station_certificate
from chargeward.server.auth.throttle import StationThrottle
from chargeward.server.fleet import station_registry
from chargeward.server.stations import station_reports
from chargeward.server.stations.csms import CsmsListener, ListenerTimeouts, Registry
from chargeward.server.stations.station_certificates import register_certificate
from chargeward.server.stations.station_security import ChargerCa, set_profile
from chargeward.server.stations.tls import TlsFiles, load_certificate_and_key, server_context
from chargeward.server.store.db import Database
from tests.support.fleet import MODEL, TEST_PASSPHRASE, Pki, basic

SUBPROTOCOLS: Any = ["ocpp2.0.1"]


def _pass() -> bytes:
    return TEST_PASSPHRASE.encode()


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class StationCert:
    cert: x509.Certificate
    private_pem: str
    chain: Path
    key: Path


@dataclass
class TlsPki:
    dir: Path
    ca: x509.Certificate
    ca_signer: Signer
    ca_pem: Path
    csms_ca_pem: Path  # the CSMS root the stations trust
    server_cert: Path
    server_key: str

    @classmethod
    def create(cls, d: Path) -> TlsPki:
        d.mkdir(parents=True, exist_ok=True)
        ca_signer = generate_key(f"file:{d}/charger-ca.key", _pass)
        ca = create_root_ca(ca_signer, "ACME Charger CA", "ACME", days=3650)
        (d / "charger-ca.pem").write_text(certificate_pem(ca))
        csms_signer = generate_key(f"file:{d}/csms-root.key", _pass)
        csms_root = create_root_ca(csms_signer, "ACME CSMS Root", "ACME", days=3650)
        (d / "csms-root.pem").write_text(certificate_pem(csms_root))
        server_key = generate_key(f"file:{d}/server.key", _pass)
        server = issue_server_certificate(
            csms_signer, csms_root, server_key.public_key(), "127.0.0.1", "ACME", days=30
        )
        (d / "server.pem").write_text(certificate_pem(server))
        return cls(
            d,
            ca,
            ca_signer,
            d / "charger-ca.pem",
            d / "csms-root.pem",
            d / "server.pem",
            f"file:{d}/server.key",
        )

    def with_server_certificate(
        self,
        d: Path,
        host: str,
        *,
        days: int = 30,
        at: dt.datetime | None = None,
        alt_names: Sequence[str] = (),
    ) -> TlsPki:
        """This PKI serving a new CSMS certificate for ``host`` under the same CSMS root
        (written to ``d``), issued ``at`` (now) for ``days``: e.g. another host's or an
        expired certificate that still chains to the root the stations trust."""
        d.mkdir(parents=True, exist_ok=True)
        signer = load_signer(f"file:{self.dir}/csms-root.key", _pass)
        root = load_certificate(self.csms_ca_pem.read_bytes())
        key = generate_key(f"file:{d}/server.key", _pass)
        cert = issue_server_certificate(
            signer,
            root,
            key.public_key(),
            host,
            "ACME",
            alt_names=alt_names,
            days=days,
            now=at or now(),
        )
        (d / "server.pem").write_text(certificate_pem(cert))
        return replace(self, server_cert=d / "server.pem", server_key=key.uri)

    def server_context(
        self,
        *,
        minimum: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2,
        maximum: ssl.TLSVersion | None = None,
        ciphers: str | None = None,
    ) -> ssl.SSLContext:
        """A bare TLS server context with this PKI's server certificate: any version and
        suite a test asks for (an attacker's or a misconfigured server)."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        if ciphers is not None or minimum < ssl.TLSVersion.TLSv1_2:
            ctx.set_ciphers((ciphers or "DEFAULT") + ":@SECLEVEL=0")
        ctx.minimum_version = minimum
        if maximum is not None:
            ctx.maximum_version = maximum
        load_certificate_and_key(ctx, self.server_cert, self.server_key, _pass)
        return ctx

    def charger_ca(self) -> ChargerCa:
        return ChargerCa((self.ca,), self.ca_signer, days=365)

    def station_cert(
        self,
        cn: str,
        *,
        days: int = 365,
        at: dt.datetime | None = None,
        signer: Signer | None = None,
        ca: x509.Certificate | None = None,
        name: str | None = None,
    ) -> StationCert:
        pair = generate_device_key_pair()
        cert = issue_station_certificate(
            signer or self.ca_signer,
            ca or self.ca,
            pair.public_key,
            cn,
            "ACME",
            days=days,
            now=at or now(),
        )
        base = self.dir / (name or cn)
        base.with_suffix(".pem").write_text(certificate_pem(cert))
        key = serialization.load_pem_private_key(pair.private_pem.encode(), None)
        base.with_suffix(".key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return StationCert(
            cert, pair.private_pem, base.with_suffix(".pem"), base.with_suffix(".key")
        )

    def client_context(
        self,
        station: StationCert | None = None,
        *,
        minimum: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2,
        maximum: ssl.TLSVersion | None = None,
        ciphers: str | None = None,
    ) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(self.csms_ca_pem)
        if ciphers is not None or minimum < ssl.TLSVersion.TLSv1_2:
            ctx.set_ciphers((ciphers or "DEFAULT") + ":@SECLEVEL=0")
        ctx.minimum_version = minimum
        if maximum is not None:
            ctx.maximum_version = maximum
        if station is not None:
            ctx.load_cert_chain(station.chain, station.key)
        return ctx


@dataclass
class Csms:
    db: Database
    registry: Registry
    listener: CsmsListener
    url: str

    async def add_station(
        self,
        station_id: str,
        password: str,
        profile: int,
        certificate: x509.Certificate | None = None,
    ) -> None:
        """Register a station; ``certificate`` becomes its registered station certificate
        (profile 3 needs one, ADR 0022)."""
        async with self.db.session() as s:
            await station_registry.register_station(
                s, station_id, actor="test", password=password, now=now()
            )
            await s.flush()
            if certificate is not None:
                await register_certificate(s, station_id, certificate, actor="test", now=now())
            await set_profile(s, station_id, profile, actor="test", now=now())

    async def station_state(self, station_id: str) -> dict[str, Any]:
        """What the CSMS holds about a station: its detail and its audit trail, without what
        any connection changes (connected, last seen, the protocol it connected with, connect and
        disconnect entries)."""
        async with self.db.session() as s:
            detail = await station_reports.station_detail(s, station_id)
        trail = [a for a in await self.audit(station_id) if a[0] not in _CONNECTION_ENTRIES]
        changed = {"connected", "last_seen", "ocpp_version"}
        return {**detail.model_dump(exclude=changed), "audit": trail}

    async def audit(self, target: str) -> list[tuple[str, dict[str, Any]]]:
        from sqlalchemy import select

        from chargeward.audit.tables import AuditEntry

        async with self.db.session() as s:
            rows = await s.execute(
                select(AuditEntry).where(AuditEntry.target == target).order_by(AuditEntry.id)
            )
            return [(e.action, e.details) for e in rows.scalars()]

    async def wait(self, pred: Callable[[], Any], what: str, timeout: float = 15) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if value := pred():
                return value
            await asyncio.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what}")


_CONNECTION_ENTRIES = frozenset({"station.connect", "station.disconnect"})


@contextlib.asynccontextmanager
async def running_csms(
    data_dir: Path,
    pki: TlsPki,
    *,
    tls: bool = True,
    allow_profile_1: bool = False,
    timeouts: ListenerTimeouts | None = None,
    database_url: str | None = None,
    throttle: StationThrottle | None = None,
    tls_maximum: ssl.TLSVersion | None = None,
) -> AsyncIterator[Csms]:
    """The real OCPP listener on 127.0.0.1 with the real server TLS context (capped at
    ``tls_maximum`` when given, e.g. to test the TLS 1.2 leg)."""
    db = await Database.open(data_dir=data_dir, url=database_url)
    registry = Registry()
    ctx = (
        server_context(TlsFiles(pki.server_cert, pki.server_key, pki.ca_pem), _pass)
        if tls
        else None
    )
    if ctx is not None and tls_maximum is not None:
        ctx.maximum_version = tls_maximum
    listener = CsmsListener(
        db,
        registry,
        ssl_context=ctx,
        charger_ca=pki.charger_ca(),
        allow_profile_1=allow_profile_1,
        timeouts=timeouts,
        throttle=throttle,
    )
    server = await listener.serve("127.0.0.1", 0)
    port = next(iter(server.sockets)).getsockname()[1]
    try:
        yield Csms(db, registry, listener, f"{'wss' if tls else 'ws'}://127.0.0.1:{port}/ocpp/")
    finally:
        server.close()
        await asyncio.wait_for(server.wait_closed(), 10)
        await db.close()


@contextlib.asynccontextmanager
async def station_connection(
    url: str,
    station_id: str,
    password: str,
    *,
    ssl_context: ssl.SSLContext | None = None,
    source: str | None = None,
) -> AsyncIterator[ClientConnection]:
    """A station's websocket to the CSMS at ``url`` (profile 2: HTTP Basic), any size in,
    from the loopback address ``source`` when given (127.0.0.2 is another client)."""
    extra: dict[str, Any] = {"local_addr": (source, 0)} if source else {}
    async with connect(
        url + station_id,
        ssl=ssl_context,
        subprotocols=SUBPROTOCOLS,
        additional_headers={"Authorization": basic(station_id, password)},
        open_timeout=5,
        close_timeout=1,
        max_size=None,
        **extra,
    ) as ws:
        yield ws


async def try_connect(
    url: str, *, ssl_context: ssl.SSLContext | None = None, auth: str | None = None
) -> int | str:
    """101 when the station got in, the HTTP status it was refused with, or the TLS failure."""
    headers = {"Authorization": auth} if auth else {}
    try:
        async with connect(
            url,
            ssl=ssl_context,
            subprotocols=SUBPROTOCOLS,
            additional_headers=headers,
            open_timeout=5,
            close_timeout=1,
        ):
            return 101
    except InvalidStatus as e:
        return e.response.status_code
    except (OSError, EOFError, ssl.SSLError) as e:
        return f"tls: {type(e).__name__}: {e!r}"
    except Exception as e:  # a refused handshake surfaces in several shapes
        return f"refused: {type(e).__name__}: {e} ({e.__cause__!r})"


def provision_charger(
    root: Path,
    pki: Pki,
    factory_bundle: Path,
    tls_pki: TlsPki,
    station_id: str,
    password: str,
    *,
    certificate: bool,
) -> StateDir:
    """A charger trusting the CSMS root; with ``certificate`` also a station certificate."""
    state_dir = root / station_id
    provision(
        state_dir,
        identity=Identity(station_id, MODEL, "ACME", station_id),
        password=password,
        roots_pem=pki.root_pem.read_bytes(),
        factory_bundle=factory_bundle,
        csms_roots_pem=tls_pki.csms_ca_pem.read_bytes(),
    )
    state = StateDir(state_dir)
    if certificate:
        cert = tls_pki.station_cert(station_id, days=20)
        state.device_certificate_path.write_text(certificate_pem(cert.cert))
        store = state.credential_store()
        store.save(replace(store.load(), device_key_pem=cert.private_pem))
    return state


@contextlib.asynccontextmanager
async def running_agent(state: StateDir, url: str) -> AsyncIterator[Agent]:
    agent = Agent(
        AgentConfig(
            state_dir=state.root,
            csms_url=url,
            reconnect_delay=0.1,
            reboot_delay=0.05,
            response_timeout=5,
            location_policy=LAB_LOOPBACK,  # the test server is on 127.0.0.1: a lab setting
        )
    )
    task = asyncio.create_task(agent.run())
    try:
        yield agent
    finally:
        agent.stop()
        await asyncio.wait_for(task, 10)


# -- a bare TLS server: one handshake per connection, what the server saw of it --------------


@dataclass(frozen=True)
class ServerSide:
    """The server's side of one handshake: what was negotiated, or the error that ended it."""

    version: str | None = None
    cipher: str | None = None
    compression: str | None = None
    error: OSError | None = None

    @property
    def reason(self) -> str | None:
        """OpenSSL's reason for a failed handshake (e.g. ``NO_SHARED_CIPHER``)."""
        return getattr(self.error, "reason", None) if self.error else None


@dataclass
class TlsServer:
    port: int
    handshakes: queue.Queue[ServerSide]

    def next_handshake(self, timeout: float = 5) -> ServerSide:
        return self.handshakes.get(timeout=timeout)


@contextlib.contextmanager
def tls_server(ctx: ssl.SSLContext) -> Iterator[TlsServer]:
    """A TLS server with ``ctx`` on 127.0.0.1 (a thread with blocking sockets, 5 s timeouts)
    that does the handshake of each connection and reports it; nothing runs above TLS."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    server = TlsServer(listener.getsockname()[1], queue.Queue())
    stop = threading.Event()

    def handle(conn: socket.socket) -> None:
        conn.settimeout(5)
        try:
            tls = ctx.wrap_socket(conn, server_side=True)
        except OSError as e:
            conn.close()
            server.handshakes.put(ServerSide(error=e))
            return
        with tls:
            cipher = tls.cipher()
            server.handshakes.put(
                ServerSide(tls.version(), cipher[0] if cipher else None, tls.compression())
            )
            with contextlib.suppress(OSError):
                tls.recv(1)  # until the client closes

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            handle(conn)

    thread = threading.Thread(target=serve, name="tls-server", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        stop.set()
        thread.join(10)
        listener.close()
