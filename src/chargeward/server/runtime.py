"""Run the server: OCPP listener and HTTP API in one asyncio process.

On start the data directory is prepared (database schema, blob store, download-URL key,
Manufacturer Root CA trust store, an ``admin`` API token on first start) and, once both
listeners are up, ``<data-dir>/server.json`` records the real addresses.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn

from chargeward.audit import log as audit_log
from chargeward.audit import sequencer as audit_sequencer
from chargeward.audit.log import DEFAULT_ORIGIN
from chargeward.crypto import load_certificates, passphrase_from_env
from chargeward.crypto.pki import certificate_fingerprint, certificate_pem
from chargeward.errors import ChargewardError, ConfigError, Conflict
from chargeward.limits import DEFAULT_SERVER_LIMITS, ServerLimits
from chargeward.server.auth import tokens
from chargeward.server.cluster.cluster import Node
from chargeward.server.common import urls
from chargeward.server.http.api import create_app
from chargeward.server.http.http_security import (
    CertificateReloader,
    CertificateSlot,
    HttpPerimeter,
    HttpSecurity,
    UvicornConfig,
    check_http_binding,
    check_public_url,
    http_server_context,
    http_tls_files,
    parse_networks,
)
from chargeward.server.http.limits import HttpLimits, uvicorn_options
from chargeward.server.proxy import Proxy, ProxyConfig
from chargeward.server.proxy.records import DbProxyHooks
from chargeward.server.rollout import campaign_scheduler
from chargeward.server.state import TRUST_FILE, ServerState
from chargeward.server.stations.csms import CsmsListener
from chargeward.server.stations.station_security import renew_certificates_forever
from chargeward.server.stations.tls import OcppSecurity, limit_tls_handshake, listener_security
from chargeward.server.store.blobs import BlobStore
from chargeward.server.store.db import (
    DEFAULT_TIMEOUTS,
    Database,
    DatabaseTimeouts,
    LeadershipLost,
    assert_leading,
)
from chargeward.supply.report_check import GatePolicy

LOG = logging.getLogger("chargeward.server")
TOKEN_FILE = "admin.token"  # noqa: S105 (a file name)
INFO_FILE = "server.json"


@dataclass(frozen=True)
class ServerConfig:
    data_dir: Path
    host: str = "127.0.0.1"
    ocpp_port: int = 9000
    http_port: int = 8080
    public_url: str | None = None
    heartbeat_interval: int = 300
    renew_interval: float = 60.0  # how often the online TUF roles are checked for renewal
    campaign_tick: float = 5.0  # how often the leader plans running campaigns
    campaign_approval_threshold: int = 100  # more stations: a second person starts it
    gate_policy: GatePolicy = field(default_factory=GatePolicy)  # scan reports' minimum
    audit_origin: str = DEFAULT_ORIGIN  # names the log in its signed checkpoints
    checkpoint_interval: float = 60.0  # how often the leader signs a checkpoint if the log grew
    checkpoint_key: str | None = None  # Ed25519 key URI (file: or pkcs11:); default in data dir
    security: OcppSecurity = field(default_factory=OcppSecurity)  # TLS, charger CA, profile 1
    http_limits: HttpLimits = field(default_factory=HttpLimits)  # HTTP timeouts (server.limits)
    limits: ServerLimits = DEFAULT_SERVER_LIMITS  # input bounds: bodies, frames, uploads (ADR 30)
    http: HttpSecurity = field(default_factory=HttpSecurity)  # HTTPS, lab flag, proxies (ADR 25)
    database: DatabaseTimeouts = DEFAULT_TIMEOUTS  # PostgreSQL session bounds (ADR 31)
    leader_lease: float = 10.0  # seconds a cluster leader leads without renewing (ADR 34)
    authorize: str = "Accepted"  # idTokenInfo.status of every Authorize (ADR 0035)
    upstream: ProxyConfig | None = None  # proxy mode: stations relayed to this CSMS (ADR 0040)


def write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def add_manufacturer_root(data_dir: Path, pem: bytes) -> list[str]:
    """Add root certificate(s) to the trust store; returns the fingerprints now trusted."""
    new = load_certificates(pem)
    path = data_dir / TRUST_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    have = load_certificates(path.read_bytes()) if path.exists() else []
    known = {certificate_fingerprint(c) for c in have}
    added = [c for c in new if certificate_fingerprint(c) not in known]
    if added:
        text = "".join(certificate_pem(c) for c in [*have, *added])
        write_private(path, text.encode())
    return [certificate_fingerprint(c) for c in [*have, *added]]


async def prepare(
    data_dir: Path, timeouts: DatabaseTimeouts = DEFAULT_TIMEOUTS
) -> tuple[Database, str | None]:
    """Open the database and create the admin token on first start (returned once)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "tmp").mkdir(exist_ok=True)
    db = await Database.open(data_dir=data_dir, timeouts=timeouts)
    token = None
    token_path = data_dir / TOKEN_FILE
    if not token_path.exists():
        try:
            async with db.session() as s:
                # The built-in ``admin`` principal: role admin, every permission.
                token = await tokens.create_token(
                    s, "admin", actor="system", now=dt.datetime.now(dt.UTC), role="admin"
                )
        except Conflict:
            token = None  # the admin token exists; its file was removed on purpose
        if token:
            write_private(token_path, token.encode())
    return db, token


async def renew_online_metadata(state: ServerState, interval: float) -> None:
    """Re-sign timestamp (and snapshot) before expiry, forever; problems are logged loudly.

    An expired timestamp stops every charger from updating, so this runs from start-up on.
    """
    while True:
        repo = state.repository
        if repo.initialized:
            assert_leading()  # a leader paused past its lease signs nothing
            try:
                roles = await asyncio.to_thread(
                    repo.refresh_online, state.online_signers(), now=state.clock()
                )
            except ChargewardError as e:
                LOG.error("cannot renew the TUF timestamp/snapshot: %s", e)
            else:
                if roles:
                    LOG.info("renewed TUF %s metadata", " and ".join(roles))
        state.metrics.leader_job_runs.labels("renew_online_metadata").inc()
        await asyncio.sleep(interval)


async def sign_checkpoints(state: ServerState, interval: float) -> None:
    """Sign an audit-log checkpoint whenever the log grew, every ``interval`` seconds."""
    while True:
        try:
            signer = state.checkpoint_signer()
            await audit_sequencer.settle(state.db.session)  # what stations reported, signed too
            async with state.db.session() as s:
                signed = await audit_log.sign_checkpoint(
                    s, signer, origin=state.audit_origin, now=state.clock()
                )
        except LeadershipLost:
            raise
        except ChargewardError as e:
            LOG.error("cannot sign an audit checkpoint: %s", e)
        else:
            if signed is not None:
                LOG.info("signed audit checkpoint at size %d", signed.size)
        state.metrics.leader_job_runs.labels("audit_checkpoints").inc()
        await asyncio.sleep(interval)


def prepare_checkpoint_key(state: ServerState) -> None:
    """Make (first start) or open the checkpoint key now, so a wrong passphrase shows early.

    Without ``$CHARGEWARD_KEY_PASSPHRASE`` the server runs, but signs no checkpoints (loudly).
    """
    try:
        key = audit_log.vkey_of(state.checkpoint_signer(), state.audit_origin)
    except ValueError as e:
        raise ConfigError(f"audit origin {state.audit_origin!r} is not usable: {e}") from e
    except ChargewardError as e:
        if state.checkpoint_key is not None:  # asked for by name: a broken key stops the start
            raise ConfigError(f"audit checkpoint key {state.checkpoint_key}: {e}") from e
        LOG.error("audit checkpoints are not signed: %s", e)
        return
    # Public: what auditors pin (also served at GET /api/v1/audit/vkey).
    vkey_file = state.data_dir / audit_log.VKEY_FILE
    vkey_file.parent.mkdir(parents=True, exist_ok=True)
    vkey_file.write_text(key.vkey + "\n")


GC_THRESHOLDS = (20_000, 20, 50)  # CPython's are (700, 10, 10) (3.11)


def tune_garbage_collector() -> None:
    """Collect less often, and never re-scan what start-up built.

    A server holding thousands of station connections, ORM rows and decoded campaign runs
    keeps a large heap of long-lived objects; with CPython's default thresholds every few
    hundred allocations start a collection, and each full one walks that whole heap.  Objects
    alive once the server is ready (modules, schemas, keys) are moved out of the collector's
    sight (``gc.freeze``, as Instagram's servers do), and young generations are collected
    after 20,000 allocations instead of 700 (benchmarks/bench_campaign.py, ADR 0009).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def run_server(
    config: ServerConfig, on_ready: Callable[[dict[str, object]], None] | None = None
) -> None:
    passphrase = passphrase_from_env()
    # The HTTP perimeter first: a refused configuration binds nothing (ADR 0025).
    http_files = http_tls_files(
        config.http, config.security.tls_certificate, config.security.tls_key
    )
    check_http_binding(
        config.host, tls=http_files is not None, allow_insecure_http=config.http.allow_insecure_http
    )
    check_public_url(
        config.public_url,
        tls=http_files is not None,
        allow_insecure_http=config.http.allow_insecure_http,
    )
    trusted_proxies = parse_networks(config.http.trusted_proxies)
    limit_tls_handshake(config.http_limits.head_timeout)  # a stalled handshake: as a stalled head
    ssl_context, charger_ca = listener_security(config.security, passphrase)
    http_ssl = http_server_context(*http_files, passphrase) if http_files else None
    slots = []
    if http_ssl is not None and http_files is not None:
        slots.append(CertificateSlot("HTTP", http_ssl, *http_files))
    if ssl_context is not None and config.security.tls_certificate and config.security.tls_key:
        slots.append(
            CertificateSlot(
                "OCPP", ssl_context, config.security.tls_certificate, config.security.tls_key
            )
        )
    reloader = CertificateReloader(slots, passphrase, interval=config.http.reload_interval)
    db, _ = await prepare(config.data_dir, config.database)
    state = ServerState(
        data_dir=config.data_dir,
        db=db,
        blobs=BlobStore(config.data_dir / "blobs"),
        url_key=urls.load_or_create_key(config.data_dir),
        public_url="",
        campaign_approval_threshold=config.campaign_approval_threshold,
        gate_policy=config.gate_policy,
        audit_origin=config.audit_origin,
        checkpoint_key=config.checkpoint_key,
        charger_ca=charger_ca,
        limits=config.limits,
    )
    prepare_checkpoint_key(state)
    # Scale-out (PostgreSQL): presence, commands across nodes, leader-only jobs.
    node = state.node = Node(db, state.registry, state.metrics)
    node.lease = dt.timedelta(seconds=config.leader_lease)
    state.metrics.count_stations(lambda: len(state.registry.stations))
    listener = CsmsListener(
        db,
        state.registry,
        metrics=state.metrics,
        presence=node,
        heartbeat_interval=config.heartbeat_interval,
        ssl_context=ssl_context,
        charger_ca=charger_ca,
        allow_profile_1=config.security.allow_profile_1,
        limits=config.limits,
        proxy=(
            Proxy(config.upstream, DbProxyHooks(db, state.clock, state.data_dir))
            if config.upstream
            else None
        ),
    )
    listener.sink.limits = config.limits  # core-message bounds (ADR 0035)
    listener.sink.authorize_status = config.authorize
    state.reports = listener.sink
    # Station reports queue their audit entries on PostgreSQL; every node appends them to the
    # log (ADR 0033).  SQLite queues nothing.
    sequencer = audit_sequencer.Sequencer(db.session)
    sequencing = asyncio.create_task(
        sequencer.run() if db.dialect == "postgresql" else asyncio.sleep(0),
        name="audit-sequencer",
    )
    await node.forget_stale_connections()
    try:
        ws = await listener.serve(config.host, config.ocpp_port)
    except OSError as e:
        sequencing.cancel()
        await db.close()
        raise ConfigError(
            f"cannot listen for OCPP on {config.host}:{config.ocpp_port}: {e.strerror}"
        ) from e
    ocpp_port = next(iter(ws.sockets)).getsockname()[1]
    uv = uvicorn.Server(
        UvicornConfig(
            HttpPerimeter(create_app(state), trusted_proxies),
            host=config.host,
            port=config.http_port,
            log_level="warning",
            lifespan="off",
            access_log=False,
            # X-Forwarded-* are believed from --trusted-proxy only, by HttpPerimeter; uvicorn's
            # own default believes them from 127.0.0.1.
            proxy_headers=False,
            tls=http_ssl,  # Chargeward's context (its key loader, TLS 1.2+), reloaded in place
            **uvicorn_options(config.http_limits),  # slow heads and bodies, connections (limits)
        )
    )
    tune_garbage_collector()
    task = asyncio.create_task(uv.serve())
    # Station certificate renewal (OCPP A02): a plain periodic task on every node for now.
    cert_renewer = asyncio.create_task(
        renew_certificates_forever(
            db,
            state.registry,
            within=dt.timedelta(days=config.security.renew_within_days),
            interval=config.security.renew_check_interval,
        )
        if charger_ca is not None and charger_ca.signer is not None
        else asyncio.sleep(0)
    )
    while not uv.started and not task.done():  # noqa: ASYNC110 (uvicorn has no started event)
        await asyncio.sleep(0.02)
    if task.done():
        ws.close()
        sequencing.cancel()
        await db.close()
        raise ConfigError(f"cannot listen for HTTP on {config.host}:{config.http_port}")
    http_port = uv.servers[0].sockets[0].getsockname()[1]
    host = f"[{config.host}]" if ":" in config.host else config.host
    api_url = f"{'https' if http_ssl else 'http'}://{host}:{http_port}"
    state.public_url = (config.public_url or api_url).rstrip("/")
    node.api_url = api_url
    # Jobs that must run once per cluster, not once per node: only the leader runs them.
    await node.start(
        {
            "renew_online_metadata": lambda: renew_online_metadata(state, config.renew_interval),
            "campaign_scheduler": lambda: campaign_scheduler.run_forever(
                state, config.campaign_tick
            ),
            "audit_checkpoints": lambda: sign_checkpoints(state, config.checkpoint_interval),
        }
    )
    info: dict[str, object] = {
        "ocpp_url": f"{'wss' if ssl_context else 'ws'}://{host}:{ocpp_port}/ocpp/",
        "api_url": api_url,
        "download_base_url": state.public_url,
        "pid": os.getpid(),
        "node_id": node.id,
        "database": db.dialect,
    }
    write_private(config.data_dir / INFO_FILE, json.dumps(info).encode())
    reloader.on_sighup()
    watcher = asyncio.create_task(reloader.watch())
    if on_ready:
        on_ready(info)
    try:
        await task
    finally:
        reloader.remove_sighup()
        watcher.cancel()
        await node.stop()
        cert_renewer.cancel()
        ws.close()
        await ws.wait_closed()
        await listener.sink.close()
        await sequencer.close(sequencing)  # what the last reports queued, into the log
        await db.close()
        (config.data_dir / INFO_FILE).unlink(missing_ok=True)


def read_info(data_dir: Path) -> dict[str, object]:
    try:
        info: dict[str, object] = json.loads((data_dir / INFO_FILE).read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"no running server found for {data_dir}") from e
    return info
