"""The reference charger agent: OCPP 2.0.1 station with a verified A/B firmware install (L01).

    >>> agent = Agent(AgentConfig(state_dir=Path("charger-1"),
    ...                           csms_url="ws://127.0.0.1:9000/ocpp/"))  # doctest: +SKIP
    >>> await agent.run()                                                # doctest: +SKIP

With ``wss://`` (security profiles 2 and 3) the agent checks the CSMS certificate against
``secure/csms-roots.pem`` with hostname verification, presents its station certificate when it
has one (profile 3) and always sends HTTP Basic with its BasicAuthPassword (profile 2).  The
CSMS may rotate that password (SetVariables ``SecurityCtrlr.BasicAuthPassword``: sealed on
flash before the answer goes out) and renew the certificate (OCPP A02, :mod:`chargeward.agent.tls`).

A "reboot" ends the OCPP session and starts over from the bootloader with nothing kept in
memory: everything the next boot needs is on the state directory (the charger's flash).

A charger provisioned with a TUF root (``chargeward agent init --tuf-root``) also needs
``repository_url``: every image must then be listed by the TUF repository for this charger
before it is installed, and the agent looks for security releases at its first connection
after start-up and then every ``update_check_interval`` seconds, reporting each new one once
with ``DataTransfer`` (vendor ``org.chargeward``, message ``SecurityUpdateAvailable``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import hashlib
import json
import logging
import ssl
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from cryptography import x509
from ocpp.exceptions import OCPPError
from ocpp.v201 import call
from ocpp.v201.enums import ConnectorStatusEnumType
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from chargeward.agent import bootloader, certificates, diagnostics, download, installer, upload
from chargeward.agent import tls as station_tls
from chargeward.agent.bootloader import Booted, NoBootableSlot
from chargeward.agent.components import VerifiedRelease, accept_release, other_components
from chargeward.agent.delta_update import (
    DeltaJob,
    DeltaRefused,
    check_delta_listing,
    delta_offer,
)
from chargeward.agent.local_cache import FirmwareCache
from chargeward.agent.location import SECURITY_EVENT as LOCATION_EVENT
from chargeward.agent.location import LocationPolicy, LocationRefused
from chargeward.agent.release_fetch import fetch_release
from chargeward.agent.security_log import SecurityLog, to_jsonl
from chargeward.agent.state import StateDir
from chargeward.agent.tuf_client import RepositoryClient, RepositoryLimits, RepositoryView
from chargeward.agent.verify import (
    SecurityUpdate,
    SignedImage,
    VerifiedImage,
    accept_image,
    check_target,
    find_security_updates,
    target_path_for,
    verify_image,
)
from chargeward.crypto.pki import CertificateHashData
from chargeward.crypto.signature import Digest, sha256_file
from chargeward.errors import (
    BadSignature,
    ChargewardError,
    ChargingUnavailable,
    ConfigError,
    RepositoryRefused,
    RevokedCertificate,
    RollbackRefused,
    TransportError,
    TrustError,
    UntrustedCertificate,
)
from chargeward.logging_setup import websocket_logger
from chargeward.model.firmware import ImageHeader
from chargeward.ocpp.base import VENDOR_ID, ocpp_time, parse_ocpp_time, utc_now
from chargeward.ocpp.station import (
    CertificateResult,
    InstalledCertificate,
    QuarantineChargePoint,
    StationChargePoint,
)
from chargeward.release.delta import apply_delta, delta_result

LOG = logging.getLogger("chargeward.agent")
SUBPROTOCOL = "ocpp2.0.1"
TECH_INFO_MAX = 255
MAX_FRAME = 256 * 1024  # the largest OCPP frame taken from the CSMS; a larger one: close 1009
ROUTINE_EVENTS = frozenset({"FirmwareUpdated", "StartupOfTheDevice", "ResetOrReboot"})
REPOSITORY_EVENT = "FirmwareRepositoryCheckFailed"
UPDATE_AVAILABLE = "SecurityUpdateAvailable"
OWNER_NOTIFICATION = "OwnerNotification"
FINAL_STATUSES = frozenset(
    {
        "Installed",
        "InstallationFailed",
        "InstallVerificationFailed",
        "InvalidSignature",
        "DownloadFailed",
    }
)
TAMPER_EVENT = bootloader.TAMPER_EVENT
# OCPP device model: ChargingStation.AllowNewSessionsPendingFirmwareUpdate (L01.FR.07)
ALLOW_NEW_SESSIONS = ("ChargingStation", "AllowNewSessionsPendingFirmwareUpdate")
PASSWORD_VARIABLE = ("SecurityCtrlr", "BasicAuthPassword")  # write-only (OCPP A01)
_R = TypeVar("_R")


async def cancel_and_wait(task: asyncio.Task[Any], *, every: float = 0.1) -> None:
    """Cancel ``task`` and wait until it has ended, cancelling again if a cancellation is lost.

    On Python 3.11 ``asyncio.wait_for`` swallows a cancellation that arrives in the same loop
    iteration as the result it waited for (python/cpython#86296, fixed in 3.12).  The ocpp
    package waits for every CALLRESULT that way, so an UpdateFirmware that arrives together
    with the answer to the job's last status could leave the old job running (and sleeping
    until its retrieveDateTime) instead of cancelled (OCPP L01.FR.24: AcceptedCanceled).
    """
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=every)
    if not task.cancelled() and task.exception() is not None:
        LOG.debug("cancelled task ended with %r", task.exception())


@dataclass(frozen=True)
class AgentConfig:
    state_dir: Path
    csms_url: str
    connectors: int = 1
    boot_attempts: int = 3
    max_image_bytes: int = 512 * 1024 * 1024
    reconnect_delay: float = 5.0
    response_timeout: float = 30.0
    default_retries: int = 3
    default_retry_interval: int = 30
    repository_url: str | None = None  # TUF repository base, e.g. http://host:8080/tuf/
    update_check_interval: float = 86400.0  # seconds between checks for security releases
    repository_limits: RepositoryLimits = field(default_factory=RepositoryLimits)
    download_rate_limit: int | None = None  # bytes per second; None: as fast as the link
    # HTTP proxy for firmware downloads (e.g. the site's gateway); None: connect directly.
    download_proxy: str | None = None
    # A trial slot must be healthy (application started, CSMS connected, connectors
    # Available) within this many seconds, or the charger reboots and uses up an attempt.
    trial_health_timeout: float = 600.0
    # A Local Controller (OCPP L03/L04): serve published firmware on this address ("host:port")
    # at this base URL (what the site's chargers reach it at); None: an ordinary charger.
    local_cache_listen: str | None = None
    local_cache_url: str | None = None
    # The charging application's start-up self-test: returns a problem, or None when it
    # started.  The reference agent has no application of its own; simulators inject one.
    self_test: Callable[[ImageHeader], str | None] | None = None
    # Where the CSMS may send the charger to download or upload (UpdateFirmware, deltas,
    # PublishFirmware, GetLog): refuses loopback, link-local, private networks and
    # credentials in URLs unless allowed (chargeward.agent.location, ADR 0023).
    location_policy: LocationPolicy = field(default_factory=LocationPolicy)
    # LAB ONLY: install a ManufacturerRootCertificate the held roots do not endorse (any CSMS
    # could then replace the firmware trust anchor).  Warned at start and on every use.
    allow_unendorsed_manufacturer_roots: bool = False


@dataclass
class ChargingSession:
    """A transaction on one EVSE (simulated EV plugged in and authorised)."""

    transaction_id: str
    evse_id: int
    seq_no: int = 0


@dataclass(frozen=True)
class UpdateJob:
    request_id: int
    location: str
    signature: str
    certificate: x509.Certificate
    retrieve_at: dt.datetime
    install_at: dt.datetime | None
    retries: int
    retry_interval: int
    delta: DeltaJob | None = None  # the CSMS's offer of a delta from the running image

    @property
    def download_key(self) -> str:
        # The signature identifies the image; the URL may change between attempts.
        return hashlib.sha256(self.signature.encode()).hexdigest()[:24]


MAX_RETRY_AFTER = 3600.0


def retry_after(value: str | None) -> float:
    """The seconds a ``Retry-After`` header asks for (0 when absent or not a number of
    seconds), at most an hour: a CSMS refusing logins (429) is not hammered, and a wrong
    header cannot park the charger for days.

        >>> retry_after("60"), retry_after(None), retry_after("soon"), retry_after("999999")
        (60.0, 0.0, 0.0, 3600.0)
    """
    if value is None or not value.strip().isdigit():
        return 0.0
    return min(float(value.strip()), MAX_RETRY_AFTER)


class Agent:
    def __init__(self, config: AgentConfig, *, clock: Callable[[], dt.datetime] = utc_now) -> None:
        self.config = config
        self.state = StateDir(config.state_dir)
        self.clock = clock
        self.identity = self.state.identity()
        self.stop_requested = asyncio.Event()
        self.boots = 0
        self.download_stats: list[download.DownloadStats] = []
        self._reboot = asyncio.Event()
        self._online = asyncio.Event()
        self._cp: StationChargePoint | None = None
        self._csms_chain: list[x509.Certificate] = []  # the CSMS's TLS certificates, if any
        self._job: UpdateJob | None = None
        self._update_task: asyncio.Task[None] | None = None
        self._installing = False
        self._pending_event: tuple[str, str] | None = None
        self._boot_reason = "PowerUp"
        self._heartbeat_interval = 300
        self.repository = self._repository_client()
        self._repository_lock = asyncio.Lock()  # one Updater at a time on the metadata cache
        self._registered = asyncio.Event()  # BootNotification accepted during this boot
        self._started = False  # this boot's start-up (or tamper notification) went through
        self._booted: Booted | None = None
        self.security_log = SecurityLog(config.state_dir / "log")  # OCPP N01, UK SCP Sch.1 10
        self._log_job: upload.LogUpload | None = None  # accepted, upload not started yet
        self._log_task: asyncio.Task[None] | None = None
        self._log_uploading: int | None = None  # requestId of the upload in progress
        self.quarantine: str | None = None  # why no slot verifies, while in tamper quarantine
        self.connector_status: dict[int, str] = {}
        self.sessions: dict[int, ChargingSession] = {}
        self._no_sessions = asyncio.Event()
        self._no_sessions.set()
        self._holding_connectors = False  # free connectors Unavailable for a pending install
        self._background: set[asyncio.Task[None]] = set()
        self.cache = self._local_cache()
        if config.location_policy.lab_loopback:
            LOG.warning(
                "%s: the location policy allows loopback (%s): a lab setting, never for a "
                "charger in the field",
                self.identity.station_id,
                ", ".join(config.location_policy.allow_networks),
            )
        if self.tls:
            station_tls.client_context(self.state)  # refuse a missing trust anchor at once

    @property
    def online(self) -> bool:
        """Connected to the CSMS right now."""
        return self._online.is_set()

    @property
    def updating(self) -> bool:
        """A firmware update of this boot is under way (a new one would cancel it)."""
        return self._update_task is not None and not self._update_task.done()

    @property
    def firmware_version(self) -> str | None:
        """The version this boot runs (None before the bootloader step or in quarantine)."""
        return self._booted.header.version if self._booted is not None else None

    @property
    def tls(self) -> bool:
        return self.config.csms_url.lower().startswith("wss://")

    def _local_cache(self) -> FirmwareCache | None:
        listen, url = self.config.local_cache_listen, self.config.local_cache_url
        if listen is None:
            return None
        host, _, port = listen.rpartition(":")
        if not host or not port.isdigit() or not url:
            raise ConfigError(
                f"local cache: listen on host:port and give the URL chargers use, got "
                f"{listen!r} and {url!r}"
            )
        return FirmwareCache(
            self.config.state_dir / "cache",
            url,
            notify=self._publish_status,
            max_bytes=self.config.max_image_bytes,
            proxy=self.config.download_proxy,
            rate_limit=self.config.download_rate_limit,
            policy=self.config.location_policy,
            on_refused=self._location_refused,
            csms_roots=self.state.csms_roots_pem(),
        )

    async def _location_refused(self, what: str, error: LocationRefused) -> None:
        """A URL from the CSMS the location policy forbids: a log line naming the rule and
        a security event (the caller reports the call's own failure status)."""
        LOG.warning(
            "%s: %s: location refused by rule %r: %s",
            self.identity.station_id,
            what,
            error.rule,
            error.detail,
        )
        await self._security_event(LOCATION_EVENT, f"{what}: {error}"[:TECH_INFO_MAX])

    async def _publish_status(
        self, status: str, request_id: int, locations: list[str] | None
    ) -> None:
        LOG.info("%s: PublishFirmwareStatus %s (%d)", self.identity.station_id, status, request_id)
        await self._call(
            call.PublishFirmwareStatusNotification(
                status=status, location=locations, request_id=request_id
            )
        )

    def _repository_client(self) -> RepositoryClient | None:
        if self.state.tuf_bootstrap_root() is None:
            return None  # layer 1 only, as any OCPP 2.0.1 station
        if not self.config.repository_url:
            raise ConfigError(
                f"{self.config.state_dir} holds a TUF root, so every update is checked against "
                "the TUF repository: give its URL (--repository or $CHARGEWARD_REPOSITORY_URL)"
            )
        return RepositoryClient(
            self.state,
            self.config.repository_url,
            limits=self.config.repository_limits,
            clock=self.clock,
            customer=self.identity.customer,
            auth=self._repository_auth,
        )

    def _repository_auth(self) -> tuple[str, str] | None:
        """The station id and current BasicAuthPassword, for the customer's tenant role."""
        try:
            return (self.identity.station_id, self.state.password())
        except ChargewardError:
            return None  # no usable credentials: the public part of the repository only

    # -- life cycle -----------------------------------------------------------------------

    async def run(self) -> None:
        """Boot, serve, and boot again after each reboot until :meth:`stop`."""
        if self.config.allow_unendorsed_manufacturer_roots:
            LOG.warning(
                "%s: LAB SWITCH %s is on: the CSMS may install manufacturer roots that no "
                "installed root endorses; never run a charger in the field like this",
                self.identity.station_id,
                certificates.LAB_SWITCH,
            )
        while not self.stop_requested.is_set():
            self.boots += 1
            self._reboot.clear()
            try:
                booted = bootloader.boot(self.state)
            except NoBootableSlot as e:
                await self._serve_quarantine(str(e))
                continue
            LOG.info(
                "%s: booted slot %s, firmware %s",
                self.identity.station_id,
                booted.slot,
                booted.header.version,
            )
            await self._serve_boot(booted)

    def stop(self) -> None:
        self.stop_requested.set()
        self._reboot.set()

    def request_reboot(self, reason: str) -> None:
        self._boot_reason = reason
        self._reboot.set()

    @property
    def url(self) -> str:
        return self.config.csms_url.rstrip("/") + "/" + quote(self.identity.station_id, safe="")

    def _auth_header(self) -> dict[str, str]:
        raw = f"{self.identity.station_id}:{self.state.password()}".encode()
        return {"Authorization": "Basic " + base64.b64encode(raw).decode()}

    async def _serve_boot(self, booted: Booted) -> None:
        self._booted = booted
        self.sessions.clear()  # a reboot ends every session
        self._no_sessions.set()
        self._holding_connectors = False
        self.connector_status = {c: "Unavailable" for c in range(1, self.config.connectors + 1)}
        self._registered.clear()
        self._started = False
        trial = booted.trial
        problem = self.config.self_test(booted.header) if self.config.self_test else None
        if problem:
            LOG.error("%s: self-test failed: %s", self.identity.station_id, problem)
            if trial:  # not healthy: reboot, using up one attempt of the trial slot
                self._boot_reason = "ApplicationReset"
                return
        background = []
        if self.repository:
            background.append(asyncio.create_task(self._update_checks()))
        if trial:
            background.append(asyncio.create_task(self._trial_watchdog()))
        if self.cache is not None and self.config.local_cache_listen:
            host, _, port = self.config.local_cache_listen.rpartition(":")
            background.append(asyncio.create_task(self.cache.run(host.strip("[]"), int(port))))
        try:
            await self._connect_loop(booted)
        finally:
            for task in background:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        await self._shutdown_tasks()

    async def _trial_watchdog(self) -> None:
        await asyncio.sleep(self.config.trial_health_timeout)
        if self.state.boot_control().trial:
            LOG.error(
                "%s: trial slot not healthy after %.0f s; rebooting",
                self.identity.station_id,
                self.config.trial_health_timeout,
            )
            self.request_reboot("Watchdog")

    async def _connect_loop(self, booted: Booted | None) -> None:
        first = True
        refused = False  # one FailedToAuthenticateAtCsms per run of refusals, not per attempt
        refused_certificate = ""  # one InvalidCsmsCertificate per run of the same reason
        while not self._reboot.is_set():
            delay = self.config.reconnect_delay
            try:
                # Built per attempt: a renewed certificate or password is used at once.
                context = station_tls.client_context(self.state) if self.tls else None
                async with connect(
                    self.url,
                    ssl=context,
                    subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
                    additional_headers=self._auth_header(),
                    open_timeout=15,
                    max_size=MAX_FRAME,
                    ping_interval=60,
                    logger=websocket_logger("chargeward.agent.ws"),  # its password: not logged
                ) as ws:
                    refused, refused_certificate = False, ""
                    await self._session(ws, booted, first)
                    first = not self._started  # start-up again if that one did not finish
            except InvalidStatus as e:
                LOG.error(
                    "%s: CSMS refused the connection: HTTP %s",
                    self.identity.station_id,
                    e.response.status_code,
                )
                delay = max(delay, retry_after(e.response.headers.get("Retry-After")))
                if e.response.status_code in (401, 403) and not refused:
                    refused = True  # logged only: without a connection it cannot be sent
                    self.record_security_event(
                        "FailedToAuthenticateAtCsms",
                        f"CSMS {diagnostics.public_url(self.config.csms_url)} refused the "
                        f"connection: HTTP {e.response.status_code}",
                    )
            except ssl.SSLCertVerificationError as e:
                # e.g. "unable to get local issuer certificate", "certificate has expired",
                # "IP address mismatch, certificate is not valid for '127.0.0.1'."
                reason = f"TLS certificate verify failed: {e.verify_message or e}"
                LOG.error(
                    "%s: cannot connect to CSMS %s: %s",
                    self.identity.station_id,
                    diagnostics.public_url(self.config.csms_url),
                    reason,
                )
                if reason != refused_certificate:
                    refused_certificate = reason
                    self.record_security_event("InvalidCsmsCertificate", reason[:TECH_INFO_MAX])
            except ssl.SSLError as e:  # no shared TLS version or cipher suite
                LOG.warning("%s: TLS with the CSMS failed: %s", self.identity.station_id, e)
            except (OSError, InvalidHandshake, TimeoutError, ConnectionClosed) as e:
                LOG.info("%s: connection to CSMS failed: %s", self.identity.station_id, e)
            except ChargewardError as e:  # e.g. the sealed device key does not open
                LOG.error("%s: cannot connect to the CSMS: %s", self.identity.station_id, e)
            if not self._reboot.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._reboot.wait(), delay)

    async def _shutdown_tasks(self) -> None:
        """A reboot ends the update and the log upload of this boot."""
        for task in (self._update_task, self._log_task):
            if task is not None:
                await cancel_and_wait(task)
        self._update_task = self._log_task = None
        self._installing = False

    async def _session(self, ws: ClientConnection, booted: Booted | None, first: bool) -> None:
        kind = StationChargePoint if booted is not None else QuarantineChargePoint
        cp = kind(self.identity.station_id, ws, self, response_timeout=self.config.response_timeout)
        self._cp = cp
        self._csms_chain = certificates.connection_chain(ws.transport.get_extra_info("ssl_object"))
        reader = asyncio.create_task(cp.start())
        self._online.set()
        # The session's own work runs beside the reader: a connection that closes (or a reboot)
        # while the BootNotification waits for its answer ends the session, and the next one
        # starts on a new connection (a call retried on a closed one would wait forever).
        work = asyncio.create_task(self._session_work(booted, first))
        rebooting = asyncio.create_task(self._reboot.wait())
        tasks: set[asyncio.Task[Any]] = {reader, work, rebooting}
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            failed = work.exception() if work in done and not work.cancelled() else None
            if failed is not None:
                raise failed
        finally:
            self._online.clear()
            self._cp = None
            # Each cancelled again if a cancellation is lost (see cancel_and_wait).
            await asyncio.gather(*(cancel_and_wait(t) for t in tasks))

    async def _session_work(self, booted: Booted | None, first: bool) -> None:
        """Start-up of one connection (BootNotification, or connector status after a
        reconnect; the tamper notification in quarantine), then heartbeats."""
        if booted is None:  # quarantine: notify, no heartbeats, no connector status
            if first:
                await self._notify_tamper()
                self._started = True
            await asyncio.Event().wait()  # until the connection closes or a reboot
        elif first:
            await self._startup(booted)
            self._started = True
        else:
            await self._send_connector_status()
        await self._heartbeats()

    # -- messages to the CSMS -------------------------------------------------------------

    async def _call(self, payload: Any) -> Any:
        """Send a CALL, waiting for a connection; queued across reconnects of this boot."""
        while True:
            await self._online.wait()
            cp = self._cp
            if cp is None:
                await asyncio.sleep(0.05)
                continue
            try:
                return await cp.call(payload, suppress=False)
            except (ConnectionClosed, TimeoutError):
                if self._reboot.is_set():
                    raise
                await asyncio.sleep(0.1)

    async def _status(self, status: str, request_id: int | None) -> None:
        LOG.info(
            "%s: firmware status %s (request %s)", self.identity.station_id, status, request_id
        )
        await self._call(call.FirmwareStatusNotification(status=status, request_id=request_id))
        # Recorded once the CSMS has it: a power loss before that sends it again at start-up.
        self.state.set_last_status(status, request_id)

    async def _status_note(self, request_id: int, note: dict[str, Any]) -> None:
        """Downloading again, with a note for a Chargeward CSMS in customData (others ignore
        it): e.g. why a delta was not used."""
        await self._call(
            call.FirmwareStatusNotification(
                status="Downloading",
                request_id=request_id,
                custom_data={"vendor_id": VENDOR_ID, **note},
            )
        )

    async def _security_event(self, type: str, tech_info: str) -> None:
        level = logging.INFO if type in ROUTINE_EVENTS else logging.WARNING
        LOG.log(level, "%s: security event %s: %s", self.identity.station_id, type, tech_info)
        now = self.clock()
        self._log_security_event(type, tech_info, now, notify=True)  # on flash before it is sent
        await self._call(
            call.SecurityEventNotification(
                type=type, timestamp=ocpp_time(now), tech_info=tech_info[:TECH_INFO_MAX]
            )
        )

    def record_security_event(self, type: str, tech_info: str) -> None:
        """Put a security event in the security log only (e.g. one that cannot be sent)."""
        LOG.warning("%s: security event %s: %s", self.identity.station_id, type, tech_info)
        self._log_security_event(type, tech_info, self.clock(), notify=False)

    def _log_security_event(
        self, type: str, tech_info: str, time: dt.datetime, *, notify: bool
    ) -> None:
        try:
            self.security_log.append(type, tech_info, time=time, notify=notify)
        except OSError as e:  # a full or failing flash must not stop the charger
            LOG.error("%s: security log not written: %s", self.identity.station_id, e)

    async def _send_connector_status(self, evse_ids: Iterable[int] | None = None) -> None:
        for evse_id in sorted(self.connector_status) if evse_ids is None else evse_ids:
            await self._call(
                call.StatusNotification(
                    timestamp=ocpp_time(self.clock()),
                    connector_status=ConnectorStatusEnumType(self.connector_status[evse_id]),
                    evse_id=evse_id,
                    connector_id=1,
                )
            )

    async def _set_connectors(self, status: str, evse_ids: list[int]) -> None:
        changed = [e for e in evse_ids if self.connector_status.get(e) != status]
        for evse_id in changed:
            self.connector_status[evse_id] = status
        await self._send_connector_status(changed)

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_interval)
            await self._call(call.Heartbeat())

    async def _startup(self, booted: Booted) -> None:
        inst = self.state.install_state()
        updating = (
            inst is not None
            and inst.phase in ("written", "rebooting")
            and inst.target_slot == booted.slot
            and not booted.fell_back
        )
        reason = "FirmwareUpdate" if updating else self._boot_reason
        ident = self.identity
        while True:
            result = await self._call(
                call.BootNotification(
                    charging_station={
                        "model": ident.model,
                        "vendor_name": ident.vendor,
                        "serial_number": ident.serial_number,
                        "firmware_version": booted.header.version,
                    },
                    reason=reason,
                )
            )
            self._heartbeat_interval = max(int(result.interval or 300), 1)
            if result.status == "Accepted":
                break
            await asyncio.sleep(self._heartbeat_interval)
        self._boot_reason = "PowerUp"
        self._registered.set()
        for event in self.state.pending_events():  # found by the bootloader, e.g. tamper
            await self._security_event(event["type"], event["tech_info"])
            self.state.drop_pending_event(event)
        if updating:
            assert inst is not None
            await self._security_event(
                "FirmwareUpdated", f"firmware {inst.version} running from slot {booted.slot}"
            )
        await self._set_connectors("Available", sorted(self.connector_status))
        # Healthy: booted, verified, connected, connectors Available -> commit (mark good).
        done = bootloader.commit(self.state, booted)
        self.state.set_owner_notice(None)
        if done is not None:
            await self._status("Installed", done.request_id)
            return
        await self._report_unfinished_install(booted)

    async def _report_unfinished_install(self, booted: Booted) -> None:
        """Tell the CSMS how the last install ended, whenever power was lost on the way."""
        inst = self.state.install_state()
        if inst is None:
            return
        last = self.state.last_status()
        told = last.get("request_id") == inst.request_id and last.get("status") in FINAL_STATUSES
        if inst.phase == "rolled_back":
            self.state.set_install_state(replace(inst, phase="failed"))
            await self._status("InstallationFailed", inst.request_id)
            await self._security_event(
                "FirmwareUpdateRolledBack",
                f"{inst.version}: {inst.detail}; running {booted.header.version}",
            )
        elif inst.phase in ("pending", "written", "rebooting"):
            # Power was lost before the new slot took over: the old slot still runs.
            self.state.set_install_state(
                replace(inst, phase="failed", detail="interrupted before the new slot ran")
            )
            await self._status("InstallationFailed", inst.request_id)
        elif not told:  # the outcome was saved, but the CSMS may not have heard it
            await self._status(
                "Installed" if inst.phase == "ok" else "InstallationFailed", inst.request_id
            )

    # -- StationController: requests from the CSMS ----------------------------------------

    def publish_firmware(
        self, location: str, checksum: str, request_id: int, retries: int, retry_interval: int
    ) -> str:
        if self.cache is None:
            return "Rejected"  # not a Local Controller
        return self.cache.publish(location, checksum, request_id, retries, retry_interval)

    async def after_publish_firmware(self, checksum: str, status: str) -> None:
        if status == "Accepted" and self.cache is not None:
            self.cache.start(checksum)

    def unpublish_firmware(self, checksum: str) -> str:
        return "NoFirmware" if self.cache is None else self.cache.unpublish(checksum)

    def update_firmware(
        self,
        request_id: int,
        firmware: dict[str, Any],
        retries: int | None,
        retry_interval: int | None,
        custom_data: dict[str, Any] | None = None,
    ) -> str:
        """OCPP L01: decide the UpdateFirmware response (certificate check, busy state)."""
        if self._installing:
            return "Rejected"  # an install cannot be cancelled half-way
        pem = firmware.get("signing_certificate")
        signature = firmware.get("signature")
        if not pem or not signature:
            self._pending_event = (
                "InvalidFirmwareSigningCertificate",
                "unsigned firmware refused: no signing certificate/signature",
            )
            return "InvalidCertificate"
        try:
            cert = certificates.check_signing_certificate(self.state, pem, self.clock())
        except RevokedCertificate as e:
            self._pending_event = ("InvalidFirmwareSigningCertificate", str(e))
            return "RevokedCertificate"
        except UntrustedCertificate as e:
            self._pending_event = ("InvalidFirmwareSigningCertificate", str(e))
            return "InvalidCertificate"
        problem = download.location_problem(firmware["location"])
        if problem is not None:
            LOG.warning("%s: UpdateFirmware refused: %s", self.identity.station_id, problem)
            return "Rejected"
        try:
            retrieve_at = parse_ocpp_time(firmware["retrieve_date_time"])
            install_raw = firmware.get("install_date_time")
            install_at = parse_ocpp_time(install_raw) if install_raw else None
        except Exception:
            return "Rejected"
        try:
            delta = delta_offer(
                custom_data,
                model=self.identity.model,
                max_bytes=self.config.max_image_bytes,
                customer=self.identity.customer,
            )
        except DeltaRefused as e:  # the full image then
            LOG.warning("%s: delta offer ignored: %s", self.identity.station_id, e)
            delta = None
        busy = self.updating
        self._job = UpdateJob(
            request_id=request_id,
            location=firmware["location"],
            signature=signature,
            certificate=cert,
            retrieve_at=retrieve_at,
            install_at=install_at,
            retries=self.config.default_retries if retries is None else retries,
            retry_interval=(
                self.config.default_retry_interval if retry_interval is None else retry_interval
            ),
            delta=delta,
        )
        return "AcceptedCanceled" if busy else "Accepted"

    async def after_update_firmware(self, request_id: int, status: str) -> None:
        if self._pending_event is not None:
            event, self._pending_event = self._pending_event, None
            await self._security_event(*event)
        if status not in ("Accepted", "AcceptedCanceled") or self._job is None:
            return
        if status == "AcceptedCanceled":
            await self._shutdown_tasks()
        job, self._job = self._job, None
        self._update_task = asyncio.create_task(self._run_update(job))

    async def trigger(self, what: str) -> None:
        if what == "FirmwareStatusNotification":
            last = self.state.last_status()
            status = last.get("status")
            if status is None or status == "Installed":  # OCPP L01.FR.26 / L01.FR.27
                await self._call(call.FirmwareStatusNotification(status="Idle"))
            else:
                await self._call(
                    call.FirmwareStatusNotification(
                        status=status, request_id=last.get("request_id")
                    )
                )
        elif what == "Heartbeat":
            await self._call(call.Heartbeat())
        elif what == "SignChargingStationCertificate":  # OCPP A02.FR.02
            csr = station_tls.new_csr(self.state)
            result = await self._call(
                call.SignCertificate(csr=csr, certificate_type=station_tls.STATION_CERTIFICATE)
            )
            LOG.info("%s: SignCertificate: %s", self.identity.station_id, result.status)

    def certificate_signed(
        self, certificate_chain: str, certificate_type: str | None
    ) -> CertificateResult:
        result = station_tls.install_signed_certificate(
            self.state, certificate_chain, certificate_type, self.clock()
        )
        LOG.info("%s: CertificateSigned: %s", self.identity.station_id, result)
        return result

    async def after_certificate_signed(self, result: CertificateResult) -> None:
        if result.security_event is not None:
            await self._security_event(certificates.TRUST_STORE_EVENT, result.security_event)
        if result.status == "Accepted" and self._cp is not None:
            # Connect again at once: the new certificate is in use and the CSMS records it.
            await self._cp._connection.close(1000, "new station certificate")
        elif result.status != "Accepted":
            await self._security_event(
                "InvalidChargingStationCertificate", (result.additional_info or "")[:TECH_INFO_MAX]
            )

    def reset(self, type: str) -> str:
        return "Scheduled" if self._installing else "Accepted"

    async def after_reset(self, type: str, status: str) -> None:
        if status == "Accepted":
            self.request_reboot("RemoteReset")

    # -- StationController: certificate management (OCPP M03, M04, M05) --------------------
    # Decisions and storage are in chargeward.agent.certificates; these methods delegate.

    def install_certificate(self, certificate_type: str, certificate: str) -> CertificateResult:
        result = certificates.install_certificate(
            self.state,
            certificate_type,
            certificate,
            self.clock(),
            allow_unendorsed=self.config.allow_unendorsed_manufacturer_roots,
        )
        LOG.log(
            logging.INFO if result.status == "Accepted" else logging.WARNING,
            "%s: InstallCertificate %s: %s",
            self.identity.station_id,
            certificate_type,
            result,
        )
        return result

    def installed_certificates(
        self, certificate_types: list[str] | None
    ) -> list[InstalledCertificate]:
        return certificates.installed_certificates(self.state, certificate_types)

    def delete_certificate(self, hash_data: CertificateHashData) -> CertificateResult:
        result = certificates.delete_certificate(self.state, hash_data, connection=self._csms_chain)
        LOG.info("%s: DeleteCertificate: %s", self.identity.station_id, result)
        return result

    async def after_certificate_change(self, result: CertificateResult) -> None:
        if result.security_event is not None:
            kind = result.event_type or certificates.TRUST_STORE_EVENT
            await self._security_event(kind, result.security_event)

    # -- the update (OCPP L01) -----------------------------------------------------------

    async def _wait_until(self, when: dt.datetime) -> None:
        delay = (when - self.clock()).total_seconds()
        if delay > 0:
            await asyncio.sleep(delay)

    async def _run_update(self, job: UpdateJob) -> None:
        rid = job.request_id
        part = self.state.downloads / f"{job.download_key}.part"
        try:
            if job.retrieve_at > self.clock():
                await self._status("DownloadScheduled", rid)
                await self._wait_until(job.retrieve_at)
            await self._status("Downloading", rid)
            release = await self._obtain(job, part)
            if release is None:
                return
            await self._status("SignatureVerified", rid)
            scheduled = False
            if job.install_at is not None and job.install_at > self.clock():
                await self._status("InstallScheduled", rid)  # OCPP L01.FR.11
                scheduled = True
                await self._wait_until(job.install_at)
            await self._wait_for_sessions_to_end(rid, scheduled)
            await self._status("Installing", rid)
            self._installing = True
            try:
                await asyncio.to_thread(
                    installer.write_slot, self.state, release, rid, self.config.boot_attempts
                )
            except (OSError, ChargewardError) as e:
                self._installing = False
                LOG.error("%s: writing the slot failed: %s", self.identity.station_id, e)
                await self._status("InstallationFailed", rid)
                await self._release_connectors()
                return
            finally:
                self._remove_parts(job, part)
            await self._status("InstallRebooting", rid)
            installer.mark_rebooting(self.state)
            self.request_reboot("FirmwareUpdate")
        except asyncio.CancelledError:
            if not self._installing:  # AcceptedCanceled or reboot: give connectors back
                self._release_connectors_soon()
            raise

    async def _obtain(self, job: UpdateJob, part: Path) -> VerifiedRelease | None:
        """The release downloaded into ``part`` and verified: rebuilt from the offered delta
        if there is one and it works, else the full image.  None when the update was refused
        or the download failed (both reported)."""
        rid = job.request_id
        for delta in ([job.delta] if job.delta is not None else []) + [None]:
            if delta is not None:
                if not await self._rebuild_from_delta(job, delta, part):
                    continue
            else:
                try:
                    await self._fetch(job, job.location, part, self.config.max_image_bytes)
                except TransportError as e:
                    LOG.warning("%s: download failed: %s", self.identity.station_id, e)
                    part.unlink(missing_ok=True)
                    if isinstance(e, LocationRefused):
                        await self._location_refused(f"UpdateFirmware {rid}", e)
                    await self._status("DownloadFailed", rid)  # OCPP L01
                    return None
            await self._status("Downloaded", rid)
            try:
                return await self._verify_release(job, part)
            except (TrustError, TransportError) as e:
                self._remove_parts(job, part)
                if delta is not None and isinstance(e, TrustError):
                    # Not the signed image: whatever made the delta, the full image decides.
                    LOG.warning(
                        "%s: the image rebuilt from the delta was refused (%s); downloading "
                        "the full image",
                        self.identity.station_id,
                        e,
                    )
                    reason = f"the rebuilt image was refused: {e}"
                    await self._status_note(rid, {"delta_fallback": reason[:TECH_INFO_MAX]})
                    continue
                await self._refused(rid, e)
                return None
        return None

    async def _fetch(self, job: UpdateJob, url: str, part: Path, max_bytes: int) -> None:
        """Download ``url`` to ``part`` (resuming what is there), reporting pauses."""
        rid = job.request_id
        stats = download.DownloadStats()
        self.download_stats.append(stats)

        async def paused(retry: int, delay: float, error: Exception) -> None:
            LOG.info(
                "%s: download paused (%s); retry %d in %.0f s",
                self.identity.station_id,
                error,
                retry,
                delay,
            )
            await self._status("DownloadPaused", rid)

        async def resumed() -> None:
            await self._status("Downloading", rid)

        await download.fetch(
            url,
            part,
            max_bytes=max_bytes,
            retries=job.retries,
            retry_interval=job.retry_interval,
            stats=stats,
            rate_limit=self.config.download_rate_limit,
            proxy=self.config.download_proxy,
            on_pause=paused,
            on_resume=resumed,
            policy=self.config.location_policy,
            csms_roots=self.state.csms_roots_pem(),
        )

    async def _rebuild_from_delta(self, job: UpdateJob, delta: DeltaJob, part: Path) -> bool:
        """The new image rebuilt into ``part`` from the running slot and the offered delta
        (:mod:`chargeward.agent.delta_update`); False, with the reason reported and nothing
        left behind, when the full image must be downloaded instead."""
        delta_part = self.state.downloads / f"{job.download_key}.delta"
        try:
            if self._booted is None:
                raise DeltaRefused("no running image to apply a delta to")
            running = self.state.slot_image(self._booted.slot)
            base = await asyncio.to_thread(sha256_file, running)
            if base.sha256 != delta.from_sha256:
                raise DeltaRefused(
                    f"the delta applies to image {delta.from_sha256[:12]}, "
                    f"this charger runs {base.sha256[:12]}"
                )
            await self._fetch(job, delta.location, delta_part, delta.length)
            got = await asyncio.to_thread(sha256_file, delta_part)
            if got != Digest(delta.sha256, delta.length):
                raise DeltaRefused(
                    f"the delta downloaded differs from the offer ({got.sha256[:12]})"
                )
            if self.repository is not None:
                info = await self._refresh(lambda repo: repo.target(delta.target))
                expected = check_delta_listing(info, delta, base)
            else:  # the OCPP signature check of the rebuilt image still follows
                expected = await asyncio.to_thread(delta_result, delta_part)
            await asyncio.to_thread(
                apply_delta,
                running,
                delta_part,
                part,
                expected=expected,
                max_size=self.config.max_image_bytes,
            )
        except (TrustError, TransportError) as e:
            part.unlink(missing_ok=True)
            LOG.warning(
                "%s: delta not used (%s); downloading the full image", self.identity.station_id, e
            )
            if isinstance(e, RepositoryRefused):
                await self._security_event(REPOSITORY_EVENT, f"delta refused: {e}")
            if isinstance(e, LocationRefused):
                await self._location_refused(f"UpdateFirmware {job.request_id} delta", e)
            await self._status_note(job.request_id, {"delta_fallback": str(e)[:TECH_INFO_MAX]})
            return False
        finally:
            delta_part.unlink(missing_ok=True)
        LOG.info("%s: image rebuilt from a %d-byte delta", self.identity.station_id, delta.length)
        return True

    async def _verify_release(self, job: UpdateJob, part: Path) -> VerifiedRelease:
        """Both layers for the downloaded primary, then for every other component the
        repository lists in its release; raises TrustError or TransportError."""
        signed = await asyncio.to_thread(
            verify_image,
            part,
            job.certificate,
            job.signature,
            model=self.identity.model,
            rollback_floor=self.state.rollback_floor(),
        )
        verified = await self._repository_check(signed)
        # OCPP L01 certificate check again: this refresh may have revoked it.
        certificates.check_not_revoked(self.state, job.certificate, self.clock())
        if not other_components(verified):
            return accept_release(verified, ())
        ident = self.identity
        release = await self._refresh(
            lambda repo: fetch_release(
                repo,
                verified,
                state=self.state,
                model=ident.model,
                customer=ident.customer,
                key=job.download_key,
                max_bytes=self.config.max_image_bytes,
            )
        )
        certificates.check_not_revoked(self.state, job.certificate, self.clock())  # this refresh
        return release

    async def _refused(self, rid: int, e: ChargewardError) -> None:
        """Report an update refused before anything was written (the running slot stays)."""
        LOG.warning("%s: update refused: %s", self.identity.station_id, e)
        if isinstance(e, TransportError):
            await self._status("DownloadFailed", rid)
        elif isinstance(e, RepositoryRefused):
            await self._status("InvalidSignature", rid)
            await self._security_event(REPOSITORY_EVENT, str(e))
        elif isinstance(e, BadSignature):
            await self._status("InvalidSignature", rid)
            await self._security_event("InvalidFirmwareSignature", str(e))
        elif isinstance(e, RevokedCertificate | UntrustedCertificate):
            await self._status("InvalidSignature", rid)
            await self._security_event("InvalidFirmwareSigningCertificate", str(e))
        else:  # the signature held; the signed contents (header, security version) did not
            await self._status("SignatureVerified", rid)
            await self._status("InstallVerificationFailed", rid)
            if isinstance(e, RollbackRefused):
                await self._security_event("FirmwareRollbackRefused", str(e))

    def _remove_parts(self, job: UpdateJob, part: Path) -> None:
        part.unlink(missing_ok=True)
        for other in self.state.downloads.glob(f"{job.download_key}.*.part"):
            other.unlink(missing_ok=True)

    async def _repository_check(self, image: SignedImage) -> VerifiedImage:
        """Layer 2 (when provisioned): the TUF repository must list this image for us."""
        if self.repository is None:
            return accept_image(image, None)
        ident = self.identity
        path = target_path_for(ident.model, image.header)
        info = await self._refresh(lambda repo: repo.target(path))
        approval = check_target(
            info,
            sha256=image.sha256,
            length=image.length,
            header=image.header,
            model=ident.model,
            customer=ident.customer,
            rollback_floor=self.state.rollback_floor(),
        )
        return accept_image(image, approval)

    async def _refresh(self, what: Callable[[RepositoryView], _R]) -> _R:
        """One repository refresh (``what`` reads the view), applying the CRL it lists.

        The CRL is applied before this returns, so the caller decides with current
        revocations; a listed CRL that fails verification is reported (see
        :func:`~chargeward.agent.certificates.apply_published_crl`) and does not stop the
        caller.  Raises what :meth:`RepositoryClient.read` raises.
        """
        assert self.repository is not None
        async with self._repository_lock:
            got = await asyncio.to_thread(self.repository.read, what)
            refused = None
            if got.crl is not None:
                refused = await asyncio.to_thread(
                    certificates.apply_published_crl, self.state, got.crl, self.clock()
                )
        if refused is not None:
            await self._security_event(REPOSITORY_EVENT, refused)
        return got.value

    # -- security releases in the repository ---------------------------------------------

    async def _update_checks(self) -> None:
        """At the first registration of this boot, then every ``update_check_interval``."""
        await self._registered.wait()
        while True:
            try:
                await self.check_for_security_updates()
            except (ChargewardError, OCPPError) as e:
                LOG.warning("%s: update check failed: %s", self.identity.station_id, e)
            except Exception as e:  # the check must never stop the charger
                LOG.error("%s: update check failed: %r", self.identity.station_id, e)
            await asyncio.sleep(self.config.update_check_interval)

    async def check_for_security_updates(self) -> list[SecurityUpdate]:
        """Refresh the repository; report security releases newer than the running image.

        Each target is reported once (``update_check.json``); returns every qualifying one.
        A trust failure is reported as a ``FirmwareRepositoryCheckFailed`` security event, an
        unreachable repository only logged.
        The refresh also applies the firmware-signing CRL it lists (:meth:`_refresh`).
        """
        if self.repository is None:
            return []
        ident = self.identity
        try:
            listed = await self._refresh(lambda repo: repo.firmware_targets(ident.model))
        except RepositoryRefused as e:
            await self._security_event(REPOSITORY_EVENT, str(e))
            return []
        except TransportError as e:
            LOG.info("%s: update check: %s", ident.station_id, e)
            return []
        updates = find_security_updates(
            listed,
            model=ident.model,
            customer=ident.customer,
            running_security_version=self._running_security_version(),
        )
        reported = self.state.reported_updates()
        for update in updates:
            if update.target in reported:
                continue
            LOG.warning(
                "%s: security release %s available (%s)",
                ident.station_id,
                update.version,
                update.target,
            )
            result = await self._call(
                call.DataTransfer(
                    vendor_id=VENDOR_ID,
                    message_id=UPDATE_AVAILABLE,
                    data=json.dumps(update.report(), sort_keys=True),
                )
            )
            LOG.info("%s: %s answered %s", ident.station_id, UPDATE_AVAILABLE, result.status)
            self.state.add_reported_update(update.target)
        return updates

    def _running_security_version(self) -> int:
        if self._booted is not None:
            return self._booted.header.security_version
        info = self.state.slot_info(self.state.boot_control().active)
        return info.security_version if info is not None else 0

    # -- charging sessions (simulated EVs) and the install gate (OCPP L01.FR.06/07) ---------

    @property
    def allow_new_sessions_pending_update(self) -> bool:
        return bool(self.state.settings().get("/".join(ALLOW_NEW_SESSIONS), False))

    def set_variable(self, component: str, variable: str, value: str) -> str:
        if (component, variable) == PASSWORD_VARIABLE:
            try:  # sealed on flash before the answer goes out
                self.state.set_password(value)
            except ValueError as e:
                LOG.warning("%s: new BasicAuthPassword refused: %s", self.identity.station_id, e)
                return "Rejected"
            LOG.info("%s: BasicAuthPassword changed by the CSMS", self.identity.station_id)
            return "Accepted"
        if (component, variable) != ALLOW_NEW_SESSIONS:
            return "UnknownVariable" if component == ALLOW_NEW_SESSIONS[0] else "UnknownComponent"
        if value.lower() not in ("true", "false"):
            return "Rejected"
        self.state.set_setting("/".join(ALLOW_NEW_SESSIONS), value.lower() == "true")
        return "Accepted"

    async def start_session(self, evse_id: int, id_token: str | None = None) -> str:
        """An EV plugs in and is authorised: TransactionEvent(Started); returns its id.

        Raises :class:`ChargingUnavailable` when the connector is not Available (occupied,
        held for a pending install, or the charger is in tamper quarantine).
        """
        if self.quarantine is not None:
            raise ChargingUnavailable("charging is disabled: the charger is in tamper quarantine")
        status = self.connector_status.get(evse_id)
        if status != "Available":
            raise ChargingUnavailable(f"connector {evse_id} is {status or 'unknown'}")
        session = ChargingSession(uuid.uuid4().hex, evse_id)
        self.sessions[evse_id] = session
        self._no_sessions.clear()
        await self._set_connectors("Occupied", [evse_id])
        await self._transaction_event(
            session,
            "Started",
            "Authorized",
            id_token=id_token or f"EV-{session.transaction_id[:8]}",
        )
        return session.transaction_id

    async def end_session(self, evse_id: int) -> None:
        """The EV leaves: TransactionEvent(Ended); the connector is free again."""
        session = self.sessions.pop(evse_id, None)
        if session is None:
            raise ChargingUnavailable(f"no session on connector {evse_id}")
        await self._transaction_event(session, "Ended", "EVDeparted", stopped="EVDisconnected")
        held = self._holding_connectors or self._installing
        await self._set_connectors("Unavailable" if held else "Available", [evse_id])
        if not self.sessions:
            self._no_sessions.set()

    async def _transaction_event(
        self,
        session: ChargingSession,
        event_type: str,
        trigger: str,
        *,
        id_token: str | None = None,
        stopped: str | None = None,
    ) -> None:
        info: dict[str, Any] = {"transaction_id": session.transaction_id}
        if stopped is not None:
            info["stopped_reason"] = stopped
        else:
            info["charging_state"] = "Charging"
        await self._call(
            call.TransactionEvent(
                event_type=event_type,
                timestamp=ocpp_time(self.clock()),
                trigger_reason=trigger,
                seq_no=session.seq_no,
                transaction_info=info,
                evse={"id": session.evse_id, "connector_id": 1},
                id_token={"id_token": id_token, "type": "Central"} if id_token else None,
            )
        )
        session.seq_no += 1

    async def _wait_for_sessions_to_end(self, request_id: int, scheduled: bool) -> None:
        """Never install while a car is charging (OCPP L01.FR.06/07).

        While sessions run the status is ``InstallScheduled`` (sent once) and free connectors
        go Unavailable unless AllowNewSessionsPendingFirmwareUpdate is true.  Once every
        session has ended, all connectors go Unavailable for the install itself.
        """
        while self.sessions:
            if not scheduled:
                await self._status("InstallScheduled", request_id)
                scheduled = True
            if not self.allow_new_sessions_pending_update and not self._holding_connectors:
                self._holding_connectors = True
                free = [e for e in self.connector_status if e not in self.sessions]
                await self._set_connectors("Unavailable", free)
            LOG.info(
                "%s: install %s waits for %d charging session(s) to end",
                self.identity.station_id,
                request_id,
                len(self.sessions),
            )
            await self._no_sessions.wait()
        self._holding_connectors = True
        await self._set_connectors("Unavailable", sorted(self.connector_status))

    async def _release_connectors(self) -> None:
        """The pending install is gone (cancelled or failed): free connectors are Available."""
        self._holding_connectors = False
        free = [e for e in self.connector_status if e not in self.sessions]
        await self._set_connectors("Available", free)

    def _release_connectors_soon(self) -> None:
        if self._holding_connectors and not self._reboot.is_set():
            task = asyncio.get_running_loop().create_task(self._release_connectors())
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    # -- tamper quarantine (UK SCP Regulations Schedule 1 para 3(4)(b)) -------------------

    async def _serve_quarantine(self, reason: str) -> None:
        """No slot verifies: notify the CSMS and the owner, offer no charging, accept only a
        validated update (which installs into a slot and reboots out of quarantine)."""
        LOG.critical("%s: tamper quarantine: %s", self.identity.station_id, reason)
        self.quarantine = reason
        self._booted = None
        self._started = False
        self.sessions.clear()
        self.connector_status = {}
        self.state.set_owner_notice(self._owner_message(reason))  # the charger's own display
        try:
            await self._connect_loop(None)
        finally:
            self.quarantine = None
            await self._shutdown_tasks()

    @staticmethod
    def _owner_message(reason: str) -> str:
        return (
            "Tamper detected: the charger's software failed its integrity check and charging "
            f"is disabled until a verified update is installed. Details: {reason}"
        )

    async def _notify_tamper(self) -> None:
        assert self.quarantine is not None
        await self._security_event(TAMPER_EVENT, self.quarantine)
        await self._call(
            call.DataTransfer(
                vendor_id=VENDOR_ID,
                message_id=OWNER_NOTIFICATION,
                data=json.dumps(
                    {
                        "event": TAMPER_EVENT,
                        "message": self._owner_message(self.quarantine),
                        "time": ocpp_time(self.clock()),
                    },
                    sort_keys=True,
                ),
            )
        )

    # -- logs: GetLog and LogStatusNotification (OCPP N01) ---------------------------------
    # The security log itself is chargeward.agent.security_log; uploads are agent.upload.

    def get_log(
        self,
        log_type: str,
        request_id: int,
        log: dict[str, Any],
        retries: int | None,
        retry_interval: int | None,
    ) -> tuple[str, str | None]:
        """OCPP N01: decide the GetLog response (status, filename); :meth:`after_get_log`
        uploads."""
        location = str(log.get("remote_location") or "")
        if log_type not in upload.LOG_TYPES or not upload.supported(location):
            return "Rejected", None
        try:
            oldest_raw, latest_raw = log.get("oldest_timestamp"), log.get("latest_timestamp")
            oldest = parse_ocpp_time(oldest_raw) if oldest_raw else None
            latest = parse_ocpp_time(latest_raw) if latest_raw else None
        except OCPPError:
            return "Rejected", None
        filename = upload.log_filename(self.identity.station_id, log_type, request_id, self.clock())
        self._log_job = upload.LogUpload(
            request_id=request_id,
            log_type=log_type,
            location=location,
            oldest=oldest,
            latest=latest,
            retries=self.config.default_retries if retries is None else max(retries, 0),
            retry_interval=(
                self.config.default_retry_interval
                if retry_interval is None
                else max(retry_interval, 0)
            ),
            filename=filename,
        )
        busy = self._log_task is not None and not self._log_task.done()
        return ("AcceptedCanceled" if busy else "Accepted"), filename  # OCPP N01.FR.12

    async def after_get_log(self, request_id: int, status: str) -> None:
        job = self._log_job
        if status not in ("Accepted", "AcceptedCanceled") or job is None:
            return
        if job.request_id != request_id:
            return
        self._log_job = None
        task, self._log_task = self._log_task, None
        canceled = self._log_uploading
        if task is not None and not task.done():
            await cancel_and_wait(task)  # the new request replaces the upload in progress
            if canceled is not None:
                await self._log_status("AcceptedCanceled", canceled)
        self._log_task = asyncio.create_task(self._upload_log(job))

    async def _log_status(self, status: str, request_id: int) -> None:
        LOG.info("%s: log status %s (request %s)", self.identity.station_id, status, request_id)
        await self._call(call.LogStatusNotification(status=status, request_id=request_id))

    def _log_content(self, job: upload.LogUpload) -> bytes:
        if job.log_type == "SecurityLog":
            entries = self.security_log.entries(job.oldest, job.latest)
            return to_jsonl(entries, max_bytes=upload.MAX_UPLOAD_BYTES)
        report = diagnostics.snapshot(
            self.state,
            now=self.clock(),
            booted=self._booted,
            security_log=self.security_log,
            settings={
                "csms_url": diagnostics.public_url(self.config.csms_url),
                "repository_url": diagnostics.public_url(self.config.repository_url),
                "connectors": self.config.connectors,
                "update_check_interval": self.config.update_check_interval,
                "boots_since_start": self.boots,
                "connected": self._online.is_set(),
            },
        )
        return json.dumps(report, indent=1, sort_keys=True, default=str).encode()

    async def _upload_log(self, job: upload.LogUpload) -> None:
        rid = job.request_id
        self._log_uploading = rid
        try:
            data = await asyncio.to_thread(self._log_content, job)
            await self._log_status("Uploading", rid)
            try:
                attempts = await upload.upload(
                    job.location,
                    job.filename,
                    data,
                    retries=job.retries,
                    retry_interval=job.retry_interval,
                    content_type="application/json",
                    policy=self.config.location_policy,
                    csms_roots=self.state.csms_roots_pem(),
                )
            except TransportError as e:
                LOG.warning("%s: log upload failed: %s", self.identity.station_id, e)
                if isinstance(e, LocationRefused):
                    await self._location_refused(f"GetLog {rid}", e)
                await self._log_status(upload.failure_status(e), rid)  # OCPP N01
                return
            LOG.info(
                "%s: %s uploaded (%d bytes, %d attempt(s))",
                self.identity.station_id,
                job.filename,
                len(data),
                attempts,
            )
            await self._log_status("Uploaded", rid)
        except (ChargewardError, OCPPError, OSError, ConnectionClosed, TimeoutError) as e:
            LOG.warning("%s: log request %s failed: %r", self.identity.station_id, rid, e)
        finally:
            if self._log_uploading == rid:
                self._log_uploading = None
