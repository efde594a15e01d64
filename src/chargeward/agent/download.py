"""Resumable firmware download over HTTP(S) with ``Range``.

The partial file lives on flash (``downloads/<key>.part``) and is fsynced as it grows, so a
dropped link or a reboot resumes where it stopped.  Every download is capped.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from chargeward.errors import TransportError

LOG = logging.getLogger("chargeward.agent.download")
FSYNC_EVERY = 1 << 20
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")


class DownloadRefused(TransportError):
    """The server refused the download (4xx): retrying the same URL cannot help."""


@dataclass
class DownloadStats:
    attempts: int = 0
    bytes_received: int = 0
    resumed_from: list[int] | None = None


async def fetch(
    url: str,
    part: Path,
    *,
    max_bytes: int,
    retries: int,
    retry_interval: float,
    timeout: float = 30.0,
    stats: DownloadStats | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> Path:
    """Download ``url`` into ``part``, resuming from what ``part`` already holds."""
    stats = stats or DownloadStats()
    stats.resumed_from = stats.resumed_from or []
    last_error: Exception | None = None
    async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client:
        for attempt in range(retries + 1):
            if attempt:
                await sleep(min(retry_interval, 1.0) if attempt == 1 else retry_interval)
            stats.attempts += 1
            try:
                if await _one_attempt(client, url, part, max_bytes, stats):
                    return part
            except DownloadRefused:
                raise
            except (httpx.TransportError, httpx.StreamError, OSError) as e:
                last_error = e
                LOG.info(
                    "download interrupted after %d bytes: %s",
                    part.stat().st_size if part.exists() else 0,
                    e,
                )
    raise TransportError(f"download failed after {retries + 1} attempts: {last_error}")


async def _one_attempt(
    client: httpx.AsyncClient, url: str, part: Path, max_bytes: int, stats: DownloadStats
) -> bool:
    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    if have:
        assert stats.resumed_from is not None
        stats.resumed_from.append(have)
    async with client.stream("GET", url, headers=headers) as r:
        if r.status_code == 416 and have:
            m = re.match(r"^bytes \*/(\d+)$", r.headers.get("content-range", ""))
            if m and int(m.group(1)) == have:
                return True  # already complete
            part.unlink()
            return False
        if r.status_code == 200:
            have = 0
            total = int(r.headers.get("content-length", "-1"))
        elif r.status_code == 206:
            m = _CONTENT_RANGE.match(r.headers.get("content-range", ""))
            if not m or int(m.group(1)) != have:
                part.unlink(missing_ok=True)
                return False
            total = int(m.group(3))
        elif 400 <= r.status_code < 500:
            raise DownloadRefused(f"server refused the download: HTTP {r.status_code}")
        else:
            raise httpx.TransportError(f"HTTP {r.status_code}")
        if total > max_bytes:
            raise DownloadRefused(f"image of {total} bytes exceeds the limit of {max_bytes}")
        flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if have else os.O_TRUNC)
        fd = os.open(part, flags, 0o600)
        with os.fdopen(fd, "ab" if have else "wb") as fh:
            unsynced = 0
            try:
                async for chunk in r.aiter_bytes():
                    have += len(chunk)
                    stats.bytes_received += len(chunk)
                    if have > max_bytes:
                        raise DownloadRefused(f"download exceeds the limit of {max_bytes} bytes")
                    fh.write(chunk)
                    unsynced += len(chunk)
                    if unsynced >= FSYNC_EVERY:
                        fh.flush()
                        os.fsync(fh.fileno())
                        unsynced = 0
            finally:
                fh.flush()
                os.fsync(fh.fileno())
        return total < 0 or have == total
