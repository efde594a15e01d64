"""The reference charger agent: OCPP 2.0.1 station with a verified A/B firmware install (L01).

    >>> agent = Agent(AgentConfig(state_dir=Path("charger-1"),
    ...                           csms_url="ws://127.0.0.1:9000/ocpp/"))  # doctest: +SKIP
    >>> await agent.run()                                                # doctest: +SKIP

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
from collections.abc import Callable
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

from chargeward.agent import bootloader, certificates, download
from chargeward.agent.bootloader import Booted
from chargeward.agent.state import InstallState, SlotInfo, StateDir, other
from chargeward.agent.storage import atomic_copy
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
from chargeward.errors import (
    BadSignature,
    ChargewardError,
    ConfigError,
    RepositoryRefused,
    RevokedCertificate,
    RollbackRefused,
    TransportError,
    TrustError,
    UntrustedCertificate,
)
from chargeward.ocpp.base import ocpp_time, parse_ocpp_time, utc_now
from chargeward.ocpp.station import CertificateResult, InstalledCertificate, StationChargePoint

LOG = logging.getLogger("chargeward.agent")
SUBPROTOCOL = "ocpp2.0.1"
TECH_INFO_MAX = 255
ROUTINE_EVENTS = frozenset({"FirmwareUpdated", "StartupOfTheDevice", "ResetOrReboot"})
REPOSITORY_EVENT = "FirmwareRepositoryCheckFailed"
VENDOR_ID = "org.chargeward"
UPDATE_AVAILABLE = "SecurityUpdateAvailable"
_R = TypeVar("_R")


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

    @property
    def download_key(self) -> str:
        # The signature identifies the image; the URL may change between attempts.
        return hashlib.sha256(self.signature.encode()).hexdigest()[:24]


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
        self._job: UpdateJob | None = None
        self._update_task: asyncio.Task[None] | None = None
        self._installing = False
        self._pending_event: tuple[str, str] | None = None
        self._boot_reason = "PowerUp"
        self._heartbeat_interval = 300
        self.repository = self._repository_client()
        self._repository_lock = asyncio.Lock()  # one Updater at a time on the metadata cache
        self._registered = asyncio.Event()  # BootNotification accepted during this boot
        self._booted: Booted | None = None

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
        )

    # -- life cycle -----------------------------------------------------------------------

    async def run(self) -> None:
        """Boot, serve, and boot again after each reboot until :meth:`stop`."""
        while not self.stop_requested.is_set():
            self.boots += 1
            booted = bootloader.boot(self.state)
            LOG.info(
                "%s: booted slot %s, firmware %s",
                self.identity.station_id,
                booted.slot,
                booted.header.version,
            )
            self._reboot.clear()
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
        self._registered.clear()
        checks = asyncio.create_task(self._update_checks()) if self.repository else None
        try:
            await self._connect_loop(booted)
        finally:
            if checks is not None:
                checks.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await checks
        await self._shutdown_tasks()

    async def _connect_loop(self, booted: Booted) -> None:
        first = True
        while not self._reboot.is_set():
            try:
                async with connect(
                    self.url,
                    subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
                    additional_headers=self._auth_header(),
                    open_timeout=15,
                    max_size=256 * 1024,
                    ping_interval=60,
                ) as ws:
                    await self._session(ws, booted, first)
                    first = False
            except InvalidStatus as e:
                LOG.error(
                    "%s: CSMS refused the connection: HTTP %s",
                    self.identity.station_id,
                    e.response.status_code,
                )
            except (OSError, InvalidHandshake, TimeoutError, ConnectionClosed) as e:
                LOG.info("%s: connection to CSMS failed: %s", self.identity.station_id, e)
            if not self._reboot.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._reboot.wait(), self.config.reconnect_delay)

    async def _shutdown_tasks(self) -> None:
        task, self._update_task = self._update_task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._installing = False

    async def _session(self, ws: ClientConnection, booted: Booted, first: bool) -> None:
        cp = StationChargePoint(
            self.identity.station_id, ws, self, response_timeout=self.config.response_timeout
        )
        self._cp = cp
        reader = asyncio.create_task(cp.start())
        self._online.set()
        tasks: set[asyncio.Task[Any]] = {reader}
        try:
            if first:
                await self._startup(booted)
            else:
                await self._send_connector_status()
            tasks.add(asyncio.create_task(self._heartbeats()))
            rebooting = asyncio.create_task(self._reboot.wait())
            tasks.add(rebooting)
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._online.clear()
            self._cp = None
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, ConnectionClosed, Exception):
                    await t

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
        self.state.set_last_status(status, request_id)
        LOG.info(
            "%s: firmware status %s (request %s)", self.identity.station_id, status, request_id
        )
        await self._call(call.FirmwareStatusNotification(status=status, request_id=request_id))

    async def _security_event(self, type: str, tech_info: str) -> None:
        level = logging.INFO if type in ROUTINE_EVENTS else logging.WARNING
        LOG.log(level, "%s: security event %s: %s", self.identity.station_id, type, tech_info)
        await self._call(
            call.SecurityEventNotification(
                type=type, timestamp=ocpp_time(self.clock()), tech_info=tech_info[:TECH_INFO_MAX]
            )
        )

    async def _send_connector_status(self) -> None:
        for connector in range(1, self.config.connectors + 1):
            await self._call(
                call.StatusNotification(
                    timestamp=ocpp_time(self.clock()),
                    connector_status=ConnectorStatusEnumType.available,
                    evse_id=connector,
                    connector_id=1,
                )
            )

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
        if updating:
            assert inst is not None
            await self._security_event(
                "FirmwareUpdated", f"firmware {inst.version} running from slot {booted.slot}"
            )
        await self._send_connector_status()
        # Healthy: booted, verified, connected, connectors Available -> commit (mark good).
        done = bootloader.commit(self.state, booted)
        if done is not None:
            await self._status("Installed", done.request_id)
            return
        await self._report_unfinished_install(booted)

    async def _report_unfinished_install(self, booted: Booted) -> None:
        inst = self.state.install_state()
        if inst is None:
            return
        if inst.phase == "rolled_back":
            self.state.set_install_state(replace(inst, phase="failed"))
            await self._status("InstallationFailed", inst.request_id)
            await self._security_event(
                "FirmwareUpdateRolledBack",
                f"{inst.version}: {inst.detail}; running {booted.header.version}",
            )
        elif inst.phase in ("pending", "written"):
            # Power was lost while the slot was being written: the old slot still runs.
            self.state.set_install_state(
                replace(inst, phase="failed", detail="interrupted while writing the slot")
            )
            await self._status("InstallationFailed", inst.request_id)

    # -- StationController: requests from the CSMS ----------------------------------------

    def update_firmware(
        self,
        request_id: int,
        firmware: dict[str, Any],
        retries: int | None,
        retry_interval: int | None,
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
        try:
            retrieve_at = parse_ocpp_time(firmware["retrieve_date_time"])
            install_raw = firmware.get("install_date_time")
            install_at = parse_ocpp_time(install_raw) if install_raw else None
        except Exception:
            return "Rejected"
        busy = self._update_task is not None and not self._update_task.done()
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

    def reset(self, type: str) -> str:
        return "Scheduled" if self._installing else "Accepted"

    async def after_reset(self, type: str, status: str) -> None:
        if status == "Accepted":
            self.request_reboot("RemoteReset")

    # -- StationController: certificate management (OCPP M03, M04, M05) --------------------
    # Decisions and storage are in chargeward.agent.certificates; these methods delegate.

    def install_certificate(self, certificate_type: str, certificate: str) -> CertificateResult:
        result = certificates.install_certificate(
            self.state, certificate_type, certificate, self.clock()
        )
        LOG.info(
            "%s: InstallCertificate %s: %s", self.identity.station_id, certificate_type, result
        )
        return result

    def installed_certificates(
        self, certificate_types: list[str] | None
    ) -> list[InstalledCertificate]:
        return certificates.installed_certificates(self.state, certificate_types)

    def delete_certificate(self, hash_data: CertificateHashData) -> CertificateResult:
        result = certificates.delete_certificate(self.state, hash_data)
        LOG.info("%s: DeleteCertificate: %s", self.identity.station_id, result)
        return result

    async def after_certificate_change(self, result: CertificateResult) -> None:
        if result.security_event is not None:
            await self._security_event(certificates.TRUST_STORE_EVENT, result.security_event)

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
            stats = download.DownloadStats()
            self.download_stats.append(stats)
            try:
                await download.fetch(
                    job.location,
                    part,
                    max_bytes=self.config.max_image_bytes,
                    retries=job.retries,
                    retry_interval=job.retry_interval,
                    stats=stats,
                )
            except TransportError as e:
                LOG.warning("%s: download failed: %s", self.identity.station_id, e)
                part.unlink(missing_ok=True)
                await self._status("DownloadFailed", rid)
                return
            await self._status("Downloaded", rid)
            try:
                signed = await asyncio.to_thread(
                    verify_image,
                    part,
                    job.certificate,
                    job.signature,
                    model=self.identity.model,
                    rollback_floor=self.state.rollback_floor(),
                )
            except BadSignature as e:
                part.unlink(missing_ok=True)
                await self._status("InvalidSignature", rid)
                await self._security_event("InvalidFirmwareSignature", str(e))
                return
            except TrustError as e:
                part.unlink(missing_ok=True)
                await self._status("SignatureVerified", rid)
                await self._status("InstallVerificationFailed", rid)
                if isinstance(e, RollbackRefused):
                    await self._security_event("FirmwareRollbackRefused", str(e))
                LOG.warning("%s: install refused: %s", self.identity.station_id, e)
                return
            try:
                verified = await self._repository_check(signed)
            except RepositoryRefused as e:
                part.unlink(missing_ok=True)
                await self._status("InvalidSignature", rid)
                await self._security_event(REPOSITORY_EVENT, str(e))
                return
            except TrustError as e:  # RollbackRefused: the listed security version is too low
                part.unlink(missing_ok=True)
                await self._status("SignatureVerified", rid)
                await self._status("InstallVerificationFailed", rid)
                await self._security_event("FirmwareRollbackRefused", str(e))
                return
            except TransportError as e:
                LOG.warning("%s: TUF repository unreachable: %s", self.identity.station_id, e)
                part.unlink(missing_ok=True)
                await self._status("DownloadFailed", rid)
                return
            try:  # OCPP L01 certificate check again: this refresh may have revoked it
                certificates.check_not_revoked(self.state, job.certificate, self.clock())
            except (RevokedCertificate, UntrustedCertificate) as e:
                part.unlink(missing_ok=True)
                await self._status("InvalidSignature", rid)
                await self._security_event("InvalidFirmwareSigningCertificate", str(e))
                return
            await self._status("SignatureVerified", rid)
            if job.install_at is not None and job.install_at > self.clock():
                await self._status("InstallScheduled", rid)
                await self._wait_until(job.install_at)
            await self._status("Installing", rid)
            self._installing = True
            try:
                await asyncio.to_thread(self._write_slot, verified, rid)
            except (OSError, ChargewardError) as e:
                self._installing = False
                LOG.error("%s: writing the slot failed: %s", self.identity.station_id, e)
                await self._status("InstallationFailed", rid)
                return
            finally:
                part.unlink(missing_ok=True)
            await self._status("InstallRebooting", rid)
            inst = self.state.install_state()
            assert inst is not None
            self.state.set_install_state(replace(inst, phase="rebooting"))
            self.request_reboot("FirmwareUpdate")
        except asyncio.CancelledError:
            raise

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

    def _write_slot(self, image: VerifiedImage, request_id: int) -> None:
        """rauc order: save "pending", invalidate and write the inactive slot, then switch."""
        bc = self.state.boot_control()
        target = other(bc.active)
        h = image.header
        self.state.set_install_state(
            InstallState(request_id, "pending", target, h.version, h.security_version)
        )
        self.state.set_slot_info(target, None)
        atomic_copy(image.path, self.state.slot_image(target))
        self.state.set_slot_info(
            target,
            SlotInfo(
                sha256=image.sha256,
                length=image.length,
                signature=image.signature,
                signing_certificate=image.signing_certificate,
                component=h.component,
                version=h.version,
                security_version=h.security_version,
            ),
        )
        self.state.set_install_state(
            InstallState(request_id, "written", target, h.version, h.security_version)
        )
        self.state.set_boot_control(
            replace(
                bc,
                active=target,
                trial=True,
                attempts_left=self.config.boot_attempts,
                previous=bc.active,
            )
        )
