"""The firmware update of OCPP L01: download → verify → install → reboot → commit.

:meth:`UpdatePipeline.accept` decides the UpdateFirmware answer (signing certificate, busy
state); :meth:`~UpdatePipeline.start` runs the accepted job once the answer is out.  The job
downloads the image (or rebuilds it from an offered delta, :mod:`chargeward.agent.delta_update`),
verifies both layers (the OCPP signature, then the TUF repository listing when provisioned,
:mod:`chargeward.agent.repository_checks`), waits for the install time and for every charging
session to end (:mod:`chargeward.agent.sessions`), writes the inactive slot and reboots.  The next
boot commits the slot once it is healthy (:meth:`~UpdatePipeline.commit`) and reports how an
install interrupted by a power loss ended.  Everything the next boot needs is on flash.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509

from chargeward.agent import bootloader, certificates, download, installer
from chargeward.agent.bootloader import Booted
from chargeward.agent.components import VerifiedRelease, accept_release, other_components
from chargeward.agent.delta_update import DeltaJob, DeltaRefused, check_delta_listing, delta_offer
from chargeward.agent.location import LocationRefused
from chargeward.agent.release_fetch import fetch_release
from chargeward.agent.repository_checks import REPOSITORY_EVENT
from chargeward.agent.verify import verify_image
from chargeward.crypto.signature import Digest, sha256_file
from chargeward.errors import (
    BadSignature,
    ChargewardError,
    RepositoryRefused,
    RevokedCertificate,
    RollbackRefused,
    TransportError,
    TrustError,
    UntrustedCertificate,
)
from chargeward.ocpp.base import parse_ocpp_time
from chargeward.release.delta import apply_delta, delta_result

if TYPE_CHECKING:
    from chargeward.agent.agent import Agent

LOG = logging.getLogger("chargeward.agent")
TECH_INFO_MAX = 255
FINAL_STATUSES = frozenset(
    {
        "Installed",
        "InstallationFailed",
        "InstallVerificationFailed",
        "InvalidSignature",
        "DownloadFailed",
    }
)


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


class UpdatePipeline:
    """The firmware update of this boot (at most one; a new one cancels the old)."""

    def __init__(self, agent: Agent) -> None:
        self._agent = agent
        self.job: UpdateJob | None = None  # accepted, started once the answer is out
        self.task: asyncio.Task[None] | None = None
        self.installing = False  # writing the slot: cannot be cancelled half-way
        self.waiting_until: dt.datetime | None = None  # retrieveDateTime or installDateTime
        self._pending_event: tuple[str, str] | None = None
        # The running job's newest status, sent or still on its way (its requestId with it).
        self.reporting: tuple[str, int] | None = None

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    def busy_status(self) -> tuple[str, int] | None:
        """What to answer TriggerMessage(FirmwareStatusNotification) while a job runs: its
        newest status and requestId, even one the CSMS has not acknowledged (it may be stuck
        on a connection that died); None when no job runs (then the last one's, or Idle)."""
        return self.reporting if self.running else None

    # -- UpdateFirmware ---------------------------------------------------------------------

    def accept(
        self,
        request_id: int,
        firmware: dict[str, Any],
        retries: int | None,
        retry_interval: int | None,
        custom_data: dict[str, Any] | None = None,
    ) -> str:
        """OCPP L01: decide the UpdateFirmware response (certificate check, busy state)."""
        agent, config = self._agent, self._agent.config
        if self.installing:
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
            cert = certificates.check_signing_certificate(agent.state, pem, agent.clock())
        except RevokedCertificate as e:
            self._pending_event = ("InvalidFirmwareSigningCertificate", str(e))
            return "RevokedCertificate"
        except UntrustedCertificate as e:
            self._pending_event = ("InvalidFirmwareSigningCertificate", str(e))
            return "InvalidCertificate"
        problem = download.location_problem(firmware["location"])
        if problem is not None:
            LOG.warning("%s: UpdateFirmware refused: %s", agent.identity.station_id, problem)
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
                model=agent.identity.model,
                max_bytes=config.max_image_bytes,
                customer=agent.identity.customer,
            )
        except DeltaRefused as e:  # the full image then
            LOG.warning("%s: delta offer ignored: %s", agent.identity.station_id, e)
            delta = None
        busy = self.running
        self.job = UpdateJob(
            request_id=request_id,
            location=firmware["location"],
            signature=signature,
            certificate=cert,
            retrieve_at=retrieve_at,
            install_at=install_at,
            retries=config.default_retries if retries is None else retries,
            retry_interval=(
                config.default_retry_interval if retry_interval is None else retry_interval
            ),
            delta=delta,
        )
        return "AcceptedCanceled" if busy else "Accepted"

    async def start(self, request_id: int, status: str) -> None:
        """The answer is out: report a refused certificate, or run the accepted job."""
        if self._pending_event is not None:
            event, self._pending_event = self._pending_event, None
            await self._agent._security_event(*event)
        if status not in ("Accepted", "AcceptedCanceled") or self.job is None:
            return
        if status == "AcceptedCanceled":
            await self._agent._shutdown_tasks()
        job, self.job = self.job, None
        self.task = asyncio.create_task(self._run(job))

    # -- download, verify, install, reboot -------------------------------------------------

    async def _wait_until(self, when: dt.datetime) -> None:
        delay = (when - self._agent.clock()).total_seconds()
        if delay > 0:
            self.waiting_until = when
            try:
                await asyncio.sleep(delay)
            finally:
                self.waiting_until = None

    async def _run(self, job: UpdateJob) -> None:
        agent = self._agent
        rid = job.request_id
        part = agent.state.downloads / f"{job.download_key}.part"
        first = "DownloadScheduled" if job.retrieve_at > agent.clock() else "Downloading"
        self.reporting = (first, rid)
        try:
            if job.retrieve_at > agent.clock():
                await agent._status("DownloadScheduled", rid)
                await self._wait_until(job.retrieve_at)
            await agent._status("Downloading", rid)
            release = await self._obtain(job, part)
            if release is None:
                return
            await agent._status("SignatureVerified", rid)
            scheduled = False
            if job.install_at is not None and job.install_at > agent.clock():
                await agent._status("InstallScheduled", rid)  # OCPP L01.FR.11
                scheduled = True
                await self._wait_until(job.install_at)
            await agent.charging.wait_until_none(rid, scheduled)
            await agent._status("Installing", rid)
            self.installing = True
            try:
                await asyncio.to_thread(
                    installer.write_slot, agent.state, release, rid, agent.config.boot_attempts
                )
            except (OSError, ChargewardError) as e:
                self.installing = False
                LOG.error("%s: writing the slot failed: %s", agent.identity.station_id, e)
                await agent._status("InstallationFailed", rid)
                await agent.charging.release()
                return
            finally:
                self._remove_parts(job, part)
            await agent._status("InstallRebooting", rid)
            installer.mark_rebooting(agent.state)
            agent.request_reboot("FirmwareUpdate")
        except asyncio.CancelledError:
            if not self.installing:  # AcceptedCanceled or reboot: give connectors back
                agent.charging.release_soon()
            raise

    async def _obtain(self, job: UpdateJob, part: Path) -> VerifiedRelease | None:
        """The release downloaded into ``part`` and verified: rebuilt from the offered delta
        if there is one and it works, else the full image.  None when the update was refused
        or the download failed (both reported)."""
        agent = self._agent
        rid = job.request_id
        for delta in ([job.delta] if job.delta is not None else []) + [None]:
            if delta is not None:
                if not await self._rebuild_from_delta(job, delta, part):
                    continue
            else:
                try:
                    await self._fetch(job, job.location, part, agent.config.max_image_bytes)
                except TransportError as e:
                    LOG.warning("%s: download failed: %s", agent.identity.station_id, e)
                    part.unlink(missing_ok=True)
                    if isinstance(e, LocationRefused):
                        await agent._location_refused(f"UpdateFirmware {rid}", e)
                    await agent._status("DownloadFailed", rid)  # OCPP L01
                    return None
            await agent._status("Downloaded", rid)
            try:
                return await self._verify_release(job, part)
            except (TrustError, TransportError) as e:
                self._remove_parts(job, part)
                if delta is not None and isinstance(e, TrustError):
                    # Not the signed image: whatever made the delta, the full image decides.
                    LOG.warning(
                        "%s: the image rebuilt from the delta was refused (%s); downloading "
                        "the full image",
                        agent.identity.station_id,
                        e,
                    )
                    reason = f"the rebuilt image was refused: {e}"
                    await agent._status_note(rid, {"delta_fallback": reason[:TECH_INFO_MAX]})
                    continue
                await self._refused(rid, e)
                return None
        return None

    async def _fetch(self, job: UpdateJob, url: str, part: Path, max_bytes: int) -> None:
        """Download ``url`` to ``part`` (resuming what is there), reporting pauses."""
        agent = self._agent
        rid = job.request_id
        stats = download.DownloadStats()
        agent.download_stats.append(stats)

        async def paused(retry: int, delay: float, error: Exception) -> None:
            LOG.info(
                "%s: download paused (%s); retry %d in %.0f s",
                agent.identity.station_id,
                error,
                retry,
                delay,
            )
            await agent._status("DownloadPaused", rid)

        async def resumed() -> None:
            await agent._status("Downloading", rid)

        await download.fetch(
            url,
            part,
            max_bytes=max_bytes,
            retries=job.retries,
            retry_interval=job.retry_interval,
            stats=stats,
            rate_limit=agent.config.download_rate_limit,
            proxy=agent.config.download_proxy,
            on_pause=paused,
            on_resume=resumed,
            policy=agent.config.location_policy,
            csms_roots=agent.state.csms_roots_pem(),
        )

    async def _rebuild_from_delta(self, job: UpdateJob, delta: DeltaJob, part: Path) -> bool:
        """The new image rebuilt into ``part`` from the running slot and the offered delta
        (:mod:`chargeward.agent.delta_update`); False, with the reason reported and nothing
        left behind, when the full image must be downloaded instead."""
        agent = self._agent
        repository = agent.repository
        delta_part = agent.state.downloads / f"{job.download_key}.delta"
        try:
            if agent.booted is None:
                raise DeltaRefused("no running image to apply a delta to")
            running = agent.state.slot_image(agent.booted.slot)
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
            if repository.client is not None:
                info = await repository.refresh(lambda repo: repo.target(delta.target))
                expected = check_delta_listing(info, delta, base)
            else:  # the OCPP signature check of the rebuilt image still follows
                expected = await asyncio.to_thread(delta_result, delta_part)
            await asyncio.to_thread(
                apply_delta,
                running,
                delta_part,
                part,
                expected=expected,
                max_size=agent.config.max_image_bytes,
            )
        except (TrustError, TransportError) as e:
            part.unlink(missing_ok=True)
            LOG.warning(
                "%s: delta not used (%s); downloading the full image", agent.identity.station_id, e
            )
            if isinstance(e, RepositoryRefused):
                await agent._security_event(REPOSITORY_EVENT, f"delta refused: {e}")
            if isinstance(e, LocationRefused):
                await agent._location_refused(f"UpdateFirmware {job.request_id} delta", e)
            await agent._status_note(job.request_id, {"delta_fallback": str(e)[:TECH_INFO_MAX]})
            return False
        finally:
            delta_part.unlink(missing_ok=True)
        LOG.info("%s: image rebuilt from a %d-byte delta", agent.identity.station_id, delta.length)
        return True

    async def _verify_release(self, job: UpdateJob, part: Path) -> VerifiedRelease:
        """Both layers for the downloaded primary, then for every other component the
        repository lists in its release; raises TrustError or TransportError."""
        agent = self._agent
        signed = await asyncio.to_thread(
            verify_image,
            part,
            job.certificate,
            job.signature,
            model=agent.identity.model,
            rollback_floor=agent.state.rollback_floor(),
        )
        verified = await agent.repository.check_image(signed)
        # OCPP L01 certificate check again: this refresh may have revoked it.
        certificates.check_not_revoked(agent.state, job.certificate, agent.clock())
        if not other_components(verified):
            return accept_release(verified, ())
        ident = agent.identity
        release = await agent.repository.refresh(
            lambda repo: fetch_release(
                repo,
                verified,
                state=agent.state,
                model=ident.model,
                customer=ident.customer,
                key=job.download_key,
                max_bytes=agent.config.max_image_bytes,
            )
        )
        certificates.check_not_revoked(agent.state, job.certificate, agent.clock())  # refreshed
        return release

    async def _refused(self, rid: int, e: ChargewardError) -> None:
        """Report an update refused before anything was written (the running slot stays)."""
        agent = self._agent
        LOG.warning("%s: update refused: %s", agent.identity.station_id, e)
        if isinstance(e, TransportError):
            await agent._status("DownloadFailed", rid)
        elif isinstance(e, RepositoryRefused):
            await agent._status("InvalidSignature", rid)
            await agent._security_event(REPOSITORY_EVENT, str(e))
        elif isinstance(e, BadSignature):
            await agent._status("InvalidSignature", rid)
            await agent._security_event("InvalidFirmwareSignature", str(e))
        elif isinstance(e, RevokedCertificate | UntrustedCertificate):
            await agent._status("InvalidSignature", rid)
            await agent._security_event("InvalidFirmwareSigningCertificate", str(e))
        else:  # the signature held; the signed contents (header, security version) did not
            await agent._status("SignatureVerified", rid)
            await agent._status("InstallVerificationFailed", rid)
            if isinstance(e, RollbackRefused):
                await agent._security_event("FirmwareRollbackRefused", str(e))

    def _remove_parts(self, job: UpdateJob, part: Path) -> None:
        part.unlink(missing_ok=True)
        for other in self._agent.state.downloads.glob(f"{job.download_key}.*.part"):
            other.unlink(missing_ok=True)

    # -- after the reboot: commit ----------------------------------------------------------

    async def commit(self, booted: Booted) -> None:
        """Healthy (booted, verified, connected, connectors Available): mark the slot good,
        then tell the CSMS how the last install ended."""
        agent = self._agent
        done = bootloader.commit(agent.state, booted)
        agent.state.set_owner_notice(None)
        if done is not None:
            await agent._status("Installed", done.request_id)
            return
        await self._report_unfinished_install(booted)

    async def _report_unfinished_install(self, booted: Booted) -> None:
        """Tell the CSMS how the last install ended, whenever power was lost on the way."""
        agent, state = self._agent, self._agent.state
        inst = state.install_state()
        if inst is None:
            return
        last = state.last_status()
        told = last.get("request_id") == inst.request_id and last.get("status") in FINAL_STATUSES
        if inst.phase == "rolled_back":
            state.set_install_state(replace(inst, phase="failed"))
            await agent._status("InstallationFailed", inst.request_id)
            await agent._security_event(
                "FirmwareUpdateRolledBack",
                f"{inst.version}: {inst.detail}; running {booted.header.version}",
            )
        elif inst.phase in ("pending", "written", "rebooting"):
            # Power was lost before the new slot took over: the old slot still runs.
            state.set_install_state(
                replace(inst, phase="failed", detail="interrupted before the new slot ran")
            )
            await agent._status("InstallationFailed", inst.request_id)
        elif not told:  # the outcome was saved, but the CSMS may not have heard it
            await agent._status(
                "Installed" if inst.phase == "ok" else "InstallationFailed", inst.request_id
            )
