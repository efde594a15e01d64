"""The firmware cache of a Local Controller (OCPP 2.0.1 L03 PublishFirmware, L04
UnpublishFirmware): download an image once over the site's WAN link, check its MD5, and serve
it to the site's chargers over HTTP with ``Range``.

    cache = FirmwareCache(Path("cache"), "http://10.0.0.2:8081", notify=send)
    cache.publish(location, md5, request_id=7, retries=3, retry_interval=30)
    # -> 'Accepted'
    await cache.run(host="0.0.0.0", port=8081)   # serve, and resume jobs

Each accepted publication is written down (``<md5>.job``) before it is answered, and its
download resumes from the partial file (:func:`chargeward.agent.download.fetch`), so a
reboot or a power cut in the middle continues where it stopped.  The statuses go to the
CSMS in order: ``Downloading`` (``DownloadPaused`` while a retry waits), ``Downloaded``,
``ChecksumVerified`` or ``InvalidChecksum``, then ``Published`` with the location, or
``DownloadFailed`` / ``PublishFailed``.

The cache is transport, not trust: MD5 only proves the transfer (it is what OCPP carries);
each charger checks what it gets against the image's TUF listing and OCPP signature.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.routing import Route

from chargeward.agent import download
from chargeward.agent.location import DEFAULT_POLICY, LocationPolicy, LocationRefused
from chargeward.agent.storage import fsync_dir
from chargeward.crypto.signature import md5_file
from chargeward.errors import TransportError

LOG = logging.getLogger("chargeward.agent.cache")
_MD5 = re.compile(r"^[0-9a-f]{32}$")
SUFFIX = ".cwfw"

# (status, requestId, locations) -> a PublishFirmwareStatusNotification to the CSMS
Notify = Callable[[str, int, list[str] | None], Awaitable[None]]
# (what, refusal) -> the agent's log line and security event for a forbidden location
OnRefused = Callable[[str, LocationRefused], Awaitable[None]]


@dataclass(frozen=True)
class PublishJob:
    request_id: int
    location: str
    checksum: str  # MD5, lower-case hex
    retries: int
    retry_interval: int


class FirmwareCache:
    def __init__(
        self,
        directory: Path,
        base_url: str,
        *,
        notify: Notify,
        max_bytes: int = 512 << 20,
        proxy: str | None = None,
        rate_limit: int | None = None,
        policy: LocationPolicy = DEFAULT_POLICY,
        on_refused: OnRefused | None = None,
        csms_roots: bytes | None = None,  # trusted for https beside the system CAs
    ) -> None:
        self.directory = directory
        self.csms_roots = csms_roots
        self.policy = policy
        self.on_refused = on_refused
        self.base_url = base_url.rstrip("/")
        self.notify = notify
        self.max_bytes = max_bytes
        self.proxy = proxy
        self.rate_limit = rate_limit
        self.served_bytes = 0  # what the site's chargers fetched from here
        self.downloaded_bytes = 0  # what came over the WAN link
        self._jobs: dict[str, asyncio.Task[None]] = {}
        directory.mkdir(parents=True, exist_ok=True)

    # -- files -----------------------------------------------------------------------------

    def _file(self, md5: str, kind: str) -> Path:
        return self.directory / f"{md5}{kind}"

    def published(self) -> list[str]:
        return sorted(p.name[: -len(SUFFIX)] for p in self.directory.glob(f"*{SUFFIX}"))

    def location(self, md5: str) -> str:
        return f"{self.base_url}/firmware/{md5}{SUFFIX}"

    def _pending(self) -> Iterator[PublishJob]:
        for path in sorted(self.directory.glob("*.job")):
            try:
                yield PublishJob(**json.loads(path.read_text()))
            except (OSError, ValueError, TypeError) as e:
                LOG.warning("dropping unreadable publish job %s: %s", path.name, e)
                path.unlink(missing_ok=True)

    # -- OCPP ------------------------------------------------------------------------------

    def publish(
        self, location: str, checksum: str, request_id: int, retries: int, retry_interval: int
    ) -> str:
        """Accept (and write down) a PublishFirmware, or say why not; the download starts
        with :meth:`start`, after the answer went out."""
        md5 = checksum.lower()
        problem = download.location_problem(location)
        if not _MD5.fullmatch(md5) or problem is not None:
            LOG.warning("PublishFirmware %d refused: %s", request_id, problem or "not an MD5")
            return "Rejected"
        job = PublishJob(request_id, location, md5, max(0, retries), max(1, retry_interval))
        tmp = self._file(md5, ".job.tmp")
        tmp.write_text(json.dumps(asdict(job)))
        os.replace(tmp, self._file(md5, ".job"))
        return "Accepted"

    def start(self, checksum: str) -> None:
        md5 = checksum.lower()
        for job in self._pending():
            if job.checksum == md5:
                self._spawn(job)

    def unpublish(self, checksum: str) -> str:
        md5 = checksum.lower()
        if md5 in self._jobs and not self._jobs[md5].done():
            return "DownloadOngoing"
        final = self._file(md5, SUFFIX) if _MD5.fullmatch(md5) else None
        if final is None or not final.exists():
            return "NoFirmware"
        final.unlink()
        self._file(md5, ".part").unlink(missing_ok=True)
        LOG.info("unpublished %s", md5)
        return "Unpublished"

    def _spawn(self, job: PublishJob) -> None:
        running = self._jobs.get(job.checksum)
        if running is not None and not running.done():
            return  # the download under way reports for it
        self._jobs[job.checksum] = asyncio.get_running_loop().create_task(self._publish(job))

    async def _publish(self, job: PublishJob) -> None:
        md5, rid = job.checksum, job.request_id
        final, part = self._file(md5, SUFFIX), self._file(md5, ".part")
        try:
            if not final.exists():
                await self.notify("Downloading", rid, None)

                async def paused(retry: int, delay: float, error: Exception) -> None:
                    await self.notify("DownloadPaused", rid, None)

                async def resumed() -> None:
                    await self.notify("Downloading", rid, None)

                stats = download.DownloadStats()
                try:
                    await download.fetch(
                        job.location,
                        part,
                        max_bytes=self.max_bytes,
                        retries=job.retries,
                        retry_interval=job.retry_interval,
                        stats=stats,
                        rate_limit=self.rate_limit,
                        on_pause=paused,
                        on_resume=resumed,
                        proxy=self.proxy,
                        policy=self.policy,
                        csms_roots=self.csms_roots,
                    )
                except TransportError as e:  # DownloadRefused, LocationRefused included
                    LOG.warning("PublishFirmware %d: download failed: %s", rid, e)
                    if isinstance(e, LocationRefused) and self.on_refused is not None:
                        await self.on_refused(f"PublishFirmware {rid}", e)
                    await self.notify("DownloadFailed", rid, None)  # OCPP L03
                    return
                finally:
                    self.downloaded_bytes += stats.bytes_received
                await self.notify("Downloaded", rid, None)
                got = await asyncio.to_thread(md5_file, part)
                if got != md5:
                    part.unlink(missing_ok=True)
                    LOG.warning("PublishFirmware %d: MD5 %s, expected %s", rid, got, md5)
                    await self.notify("InvalidChecksum", rid, None)
                    return
                await self.notify("ChecksumVerified", rid, None)
                os.replace(part, final)
                fsync_dir(self.directory)
            await self.notify("Published", rid, [self.location(md5)])
            LOG.info("published %s at %s", md5, self.location(md5))
        except OSError as e:
            LOG.error("PublishFirmware %d: %s", rid, e)
            with contextlib.suppress(Exception):
                await self.notify("PublishFailed", rid, None)
        finally:
            if not asyncio.current_task().cancelling():  # type: ignore[union-attr]
                self._file(md5, ".job").unlink(missing_ok=True)

    # -- serving ---------------------------------------------------------------------------

    def app(self) -> Starlette:
        async def firmware(request: Request) -> Response:
            name = str(request.path_params["name"])
            md5 = name[: -len(SUFFIX)] if name.endswith(SUFFIX) else ""
            path = self._file(md5, SUFFIX)
            if not _MD5.fullmatch(md5) or not path.exists():
                return PlainTextResponse("no such firmware here", status_code=404)
            return _CountedFile(path, self, media_type="application/octet-stream")

        return Starlette(routes=[Route("/firmware/{name}", firmware)])

    async def run(self, host: str, port: int) -> None:
        """Serve the published files and resume the publications a reboot interrupted."""
        for job in self._pending():
            self._spawn(job)
        server = _Server(
            uvicorn.Config(self.app(), host=host, port=port, log_level="warning", lifespan="off")
        )
        try:
            await server.serve()
        finally:
            for task in self._jobs.values():
                task.cancel()
            await asyncio.gather(*self._jobs.values(), return_exceptions=True)
            self._jobs.clear()


class _CountedFile(FileResponse):
    def __init__(self, path: Path, cache: FirmwareCache, **kw: Any) -> None:
        super().__init__(path, **kw)
        self._cache = cache

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def counted(message: Any) -> None:
            if message["type"] == "http.response.body":
                self._cache.served_bytes += len(message.get("body", b""))
            await send(message)

        await super().__call__(scope, receive, counted)


class _Server(uvicorn.Server):
    """uvicorn inside the agent's loop: the process's signals stay the agent's."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield
