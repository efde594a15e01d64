"""Log upload on request: GetLog and LogStatusNotification (OCPP N01).

The security log itself is :mod:`chargeward.agent.security_log`, the diagnostics report
:mod:`chargeward.agent.diagnostics` and the HTTP upload :mod:`chargeward.agent.upload`; this
module decides the GetLog answer and runs one upload at a time (a new request cancels the
upload in progress, OCPP N01.FR.12).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

from ocpp.exceptions import OCPPError
from ocpp.v201 import call
from websockets.exceptions import ConnectionClosed

from chargeward.agent import diagnostics, upload
from chargeward.agent.location import LocationRefused
from chargeward.agent.security_log import to_jsonl
from chargeward.agent.tasks import cancel_and_wait
from chargeward.errors import ChargewardError, TransportError
from chargeward.ocpp.base import parse_ocpp_time

if TYPE_CHECKING:
    from chargeward.agent.agent import Agent

LOG = logging.getLogger("chargeward.agent")


class LogRequests:
    """GetLog requests of this boot: the accepted one and the upload in progress."""

    def __init__(self, agent: Agent) -> None:
        self._agent = agent
        self.job: upload.LogUpload | None = None  # accepted, upload not started yet
        self.task: asyncio.Task[None] | None = None
        self._uploading: int | None = None  # requestId of the upload in progress

    def accept(
        self,
        log_type: str,
        request_id: int,
        log: dict[str, Any],
        retries: int | None,
        retry_interval: int | None,
    ) -> tuple[str, str | None]:
        """OCPP N01: decide the GetLog response (status, filename); :meth:`start` uploads."""
        agent, config = self._agent, self._agent.config
        location = str(log.get("remote_location") or "")
        if log_type not in upload.LOG_TYPES or not upload.supported(location):
            return "Rejected", None
        try:
            oldest_raw, latest_raw = log.get("oldest_timestamp"), log.get("latest_timestamp")
            oldest = parse_ocpp_time(oldest_raw) if oldest_raw else None
            latest = parse_ocpp_time(latest_raw) if latest_raw else None
        except OCPPError:
            return "Rejected", None
        filename = upload.log_filename(
            agent.identity.station_id, log_type, request_id, agent.clock()
        )
        self.job = upload.LogUpload(
            request_id=request_id,
            log_type=log_type,
            location=location,
            oldest=oldest,
            latest=latest,
            retries=config.default_retries if retries is None else max(retries, 0),
            retry_interval=(
                config.default_retry_interval if retry_interval is None else max(retry_interval, 0)
            ),
            filename=filename,
        )
        busy = self.task is not None and not self.task.done()
        return ("AcceptedCanceled" if busy else "Accepted"), filename  # OCPP N01.FR.12

    async def start(self, request_id: int, status: str) -> None:
        """The answer is out: replace the upload in progress with the accepted one."""
        job = self.job
        if status not in ("Accepted", "AcceptedCanceled") or job is None:
            return
        if job.request_id != request_id:
            return
        self.job = None
        task, self.task = self.task, None
        canceled = self._uploading
        if task is not None and not task.done():
            await cancel_and_wait(task)  # the new request replaces the upload in progress
            if canceled is not None:
                await self._status("AcceptedCanceled", canceled)
        self.task = asyncio.create_task(self._upload(job))

    async def _status(self, status: str, request_id: int) -> None:
        agent = self._agent
        LOG.info("%s: log status %s (request %s)", agent.identity.station_id, status, request_id)
        await agent._call(call.LogStatusNotification(status=status, request_id=request_id))

    def _content(self, job: upload.LogUpload) -> bytes:
        agent, config = self._agent, self._agent.config
        if job.log_type == "SecurityLog":
            entries = agent.security_log.entries(job.oldest, job.latest)
            return to_jsonl(entries, max_bytes=config.limits.log_upload_bytes)
        report = diagnostics.snapshot(
            agent.state,
            now=agent.clock(),
            booted=agent.booted,
            security_log=agent.security_log,
            settings={
                "csms_url": diagnostics.public_url(config.csms_url),
                "repository_url": diagnostics.public_url(config.repository_url),
                "connectors": config.connectors,
                "update_check_interval": config.update_check_interval,
                "boots_since_start": agent.boots,
                "connected": agent.online,
            },
        )
        return json.dumps(report, indent=1, sort_keys=True, default=str).encode()

    async def _upload(self, job: upload.LogUpload) -> None:
        agent = self._agent
        rid = job.request_id
        self._uploading = rid
        try:
            data = await asyncio.to_thread(self._content, job)
            await self._status("Uploading", rid)
            try:
                attempts = await upload.upload(
                    job.location,
                    job.filename,
                    data,
                    retries=job.retries,
                    retry_interval=job.retry_interval,
                    content_type="application/json",
                    policy=agent.config.location_policy,
                    csms_roots=agent.state.csms_roots_pem(),
                )
            except TransportError as e:
                LOG.warning("%s: log upload failed: %s", agent.identity.station_id, e)
                if isinstance(e, LocationRefused):
                    await agent._location_refused(f"GetLog {rid}", e)
                await self._status(upload.failure_status(e), rid)  # OCPP N01
                return
            LOG.info(
                "%s: %s uploaded (%d bytes, %d attempt(s))",
                agent.identity.station_id,
                job.filename,
                len(data),
                attempts,
            )
            await self._status("Uploaded", rid)
        except (ChargewardError, OCPPError, OSError, ConnectionClosed, TimeoutError) as e:
            LOG.warning("%s: log request %s failed: %r", agent.identity.station_id, rid, e)
        finally:
            if self._uploading == rid:
                self._uploading = None
