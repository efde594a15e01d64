"""Resumable firmware download over HTTP(S) with ``Range``, for links that drop.

The partial file lives on flash (``downloads/<key>.part``) and is fsynced as it grows, so a
dropped link or a reboot resumes where it stopped.  Every download is capped in size; it can
also be capped in bandwidth.  Failed attempts are retried with exponential back-off and
jitter, and the caller hears about each pause so that it can report the OCPP status:

    await fetch(url, part, max_bytes=64 << 20, retries=3, retry_interval=30,
        rate_limit=256 << 10,                        # bytes per second
        on_pause=lambda retry, delay, error: status("DownloadPaused"),
        on_resume=lambda: status("Downloading"))

``TransportError`` after the last retry means ``DownloadFailed``; ``DownloadRefused`` (a 4xx,
an image over the cap, a body longer than the server declared, a URL that
:func:`location_problem` refuses) and ``LocationRefused`` (a place the agent's
:class:`~chargeward.agent.location.LocationPolicy` forbids: checked on the URL and again on
every address the connection goes to) are raised at once, without retrying.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from chargeward.agent import location
from chargeward.agent.location import DEFAULT_POLICY, LocationPolicy, LocationRefused
from chargeward.errors import InvalidValue, TransportError

LOG = logging.getLogger("chargeward.agent.download")
FSYNC_EVERY = 1 << 20
MAX_BACKOFF = 3600.0
# Request Timeout, Too Many Requests: the server is busy (a fleet rollout), not refusing.
_BUSY = frozenset({408, 429})
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")
_MAX_DOUBLINGS = 64  # 2**64 intervals is past any cap; keeps the float finite

PauseCallback = Callable[[int, float, Exception], Awaitable[None]]
ResumeCallback = Callable[[], Awaitable[None]]


class DownloadRefused(TransportError):
    """A 4xx, an image over the cap, a body longer than declared or a URL that is no place to
    download from: never retried."""


def location_problem(url: str) -> str | None:
    """Why ``url`` is no HTTP(S) URL to fetch from or upload to, or None when it is one.

    Only the form: whether the charger may go there is the location policy's decision,
    made when it connects (:mod:`chargeward.agent.location`)."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as e:  # e.g. http://[::1 or a control character
        return f"malformed URL: {e}"
    if parsed.scheme not in ("http", "https") or not parsed.host:
        return "not an HTTP(S) URL with a host"
    if parsed.port is not None and not 0 < parsed.port < 65536:
        return f"port {parsed.port} out of range"
    return None


class _Restart(TransportError):
    """The server's answer cannot continue the partial file: the attempt failed."""


@dataclass(frozen=True)
class Pause:
    """One failed attempt followed by a retry: what failed, where, and how long we waited."""

    retry: int
    delay: float
    offset: int
    reason: str


@dataclass
class DownloadStats:
    attempts: int = 0
    bytes_received: int = 0
    resumed_from: list[int] | None = None
    pauses: list[Pause] = field(default_factory=list)
    throttled_s: float = 0.0

    @property
    def retry_delays(self) -> list[float]:
        """Seconds slept before each retry, in order."""
        return [p.delay for p in self.pauses]


def backoff_delay(
    retry: int, retry_interval: float, *, max_backoff: float, rng: random.Random
) -> float:
    """Seconds to wait before retry number ``retry`` (1 for the first retry).

    Exponential with equal jitter: half of ``retry_interval * 2**retry`` is fixed and half is
    random, so retry n waits between ``retry_interval * 2**(n-1)`` and ``retry_interval * 2**n``.
    The window stops growing at ``max_backoff``, but a wait is never shorter than
    ``retry_interval`` (OCPP: a retry may be attempted after ``retryInterval`` seconds).
    """
    window = min(retry_interval * 2.0 ** min(retry, _MAX_DOUBLINGS), max_backoff)
    return max(retry_interval, window / 2 + rng.random() * window / 2)


class _TokenBucket:
    """``rate`` bytes per second on average; bursts of at most 1/8 s worth (64 KiB at most)."""

    def __init__(
        self,
        rate: int,
        *,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
        stats: DownloadStats,
    ) -> None:
        if rate <= 0:
            raise InvalidValue("rate_limit must be a positive number of bytes per second")
        self.rate = rate
        self.burst = max(1, min(rate // 8, 64 << 10))
        self.tokens = float(self.burst)
        self._clock = clock
        self._sleep = sleep
        self._stats = stats
        self._last = clock()

    async def take(self, n: int) -> None:
        now = self._clock()
        self.tokens = min(self.burst, self.tokens + (now - self._last) * self.rate) - n
        self._last = now
        if self.tokens < 0:
            delay = -self.tokens / self.rate
            self._stats.throttled_s += delay
            await self._sleep(delay)


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
    max_backoff: float = MAX_BACKOFF,
    rate_limit: int | None = None,
    on_pause: PauseCallback | None = None,
    on_resume: ResumeCallback | None = None,
    rng: random.Random | None = None,
    clock: Callable[[], float] = time.monotonic,
    proxy: str | None = None,
    policy: LocationPolicy = DEFAULT_POLICY,
    csms_roots: bytes | None = None,
) -> Path:
    """Download ``url`` into ``part``, resuming from what ``part`` already holds.

    Makes at most ``retries + 1`` attempts (OCPP ``retries`` counts the retries).  After a
    failed attempt that will be retried, ``on_pause(retry, delay, error)`` is awaited, then
    ``delay`` seconds are slept (:func:`backoff_delay`), then ``on_resume()`` is awaited just
    before the next attempt.  ``rate_limit`` caps the average bandwidth in bytes per second;
    ``proxy`` (``http://host:port``) sends the requests through an HTTP proxy; ``policy``
    says where the charger may connect; https is verified against the system CAs and
    ``csms_roots`` (:func:`chargeward.agent.location.tls_context`).

    Raises DownloadRefused at once for a 4xx or an image over ``max_bytes``, LocationRefused
    for a place ``policy`` forbids (no connection is made), and TransportError when the last
    attempt failed.
    """
    problem = location_problem(url)
    if problem is not None:
        raise DownloadRefused(f"cannot download from {url[:100]!r}: {problem}")
    await location.check(policy, url, proxy=proxy)
    stats = stats or DownloadStats()
    stats.resumed_from = stats.resumed_from or []
    rng = rng or random.SystemRandom()
    bucket = (
        None
        if rate_limit is None
        else _TokenBucket(rate_limit, clock=clock, sleep=sleep, stats=stats)
    )
    async with location.client(
        policy, timeout=timeout, proxy=proxy, csms_roots=csms_roots
    ) as client:
        retry = 0
        while True:
            stats.attempts += 1
            try:
                if await _one_attempt(client, url, part, max_bytes, stats, bucket):
                    return part
                error: Exception = _Restart("the download ended before the declared length")
            except (DownloadRefused, LocationRefused):
                raise
            except (httpx.TransportError, httpx.StreamError, OSError, _Restart) as e:
                error = e
            offset = part.stat().st_size if part.exists() else 0
            LOG.info("download interrupted after %d bytes: %s", offset, error)
            if retry >= retries:
                raise TransportError(
                    f"download failed after {retry + 1} attempts: {error}"
                ) from error
            retry += 1
            delay = backoff_delay(retry, retry_interval, max_backoff=max_backoff, rng=rng)
            stats.pauses.append(Pause(retry, delay, offset, str(error)))
            if on_pause is not None:
                await on_pause(retry, delay, error)  # OCPP: DownloadPaused
            await sleep(delay)
            if on_resume is not None:
                await on_resume()  # OCPP: Downloading again


async def _one_attempt(
    client: httpx.AsyncClient,
    url: str,
    part: Path,
    max_bytes: int,
    stats: DownloadStats,
    bucket: _TokenBucket | None,
) -> bool:
    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    if have:
        assert stats.resumed_from is not None
        stats.resumed_from.append(have)
    async with client.stream("GET", url, headers=headers) as r:
        if r.status_code == 416 and have:
            m = re.fullmatch(r"^bytes \*/(\d+)$", r.headers.get("content-range", ""))
            if m and int(m.group(1)) == have:
                return True  # already complete
            part.unlink()
            raise _Restart("the server cannot continue the partial file (HTTP 416)")
        if r.status_code == 200:
            have = 0
            total = int(r.headers.get("content-length", "-1"))
        elif r.status_code == 206:
            m = _CONTENT_RANGE.fullmatch(r.headers.get("content-range", ""))
            if not m or int(m.group(1)) != have:
                part.unlink(missing_ok=True)
                raise _Restart("the server sent another range than asked for")
            total = int(m.group(3))
        elif 400 <= r.status_code < 500 and r.status_code not in _BUSY:
            raise DownloadRefused(f"server refused the download: HTTP {r.status_code}")
        else:
            raise httpx.TransportError(f"HTTP {r.status_code}")
        if total > max_bytes:
            raise DownloadRefused(f"image of {total} bytes exceeds the limit of {max_bytes}")
        limit = max_bytes if total < 0 else total
        flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if have else os.O_TRUNC)
        fd = os.open(part, flags, 0o600)
        with os.fdopen(fd, "ab" if have else "wb") as fh:
            unsynced = 0
            try:
                async for chunk in r.aiter_bytes():
                    if have + len(chunk) > limit:
                        raise DownloadRefused(
                            f"download exceeds the limit of {max_bytes} bytes"
                            if limit == max_bytes
                            else f"server sent more than the {total} bytes it declared"
                        )
                    have += len(chunk)
                    stats.bytes_received += len(chunk)
                    fh.write(chunk)
                    unsynced += len(chunk)
                    if unsynced >= FSYNC_EVERY:
                        fh.flush()
                        os.fsync(fh.fileno())
                        unsynced = 0
                    if bucket is not None:
                        await bucket.take(len(chunk))
            finally:
                fh.flush()
                os.fsync(fh.fileno())
        return total < 0 or have == total
