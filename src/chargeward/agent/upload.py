"""Log upload for OCPP ``GetLog`` (N01): one HTTP(S) POST of ``multipart/form-data``.

The file goes in the form field ``file``, as common CSMSs expect::

    await upload("https://csms.example/logs/abc", "security.jsonl", data,
                 retries=3, retry_interval=30)

A 4xx answer is final (:class:`UploadRefused`); a 5xx answer or a network error is retried
``retries`` times with the download's back-off (``retry_interval`` doubling, with jitter),
then raised as :class:`TransportError`.  A place the agent's location policy forbids raises
:class:`~chargeward.agent.location.LocationRefused` before any connection is made.
:func:`failure_status` names the ``LogStatusNotification`` status for either.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx

from chargeward.agent import location
from chargeward.agent.download import MAX_BACKOFF, backoff_delay, location_problem
from chargeward.agent.location import DEFAULT_POLICY, LocationPolicy
from chargeward.errors import TransportError, UploadRefused

_RNG = random.SystemRandom()

LOG = logging.getLogger("chargeward.agent.upload")
DENIED = frozenset({401, 403, 404, 410})  # not allowed to upload there (unknown or used URL)
LOG_TYPES = {"SecurityLog": ("security", "jsonl"), "DiagnosticsLog": ("diagnostics", "json")}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class LogUpload:
    """One accepted GetLog request (OCPP N01)."""

    request_id: int
    log_type: str  # SecurityLog | DiagnosticsLog
    location: str
    oldest: dt.datetime | None
    latest: dt.datetime | None
    retries: int
    retry_interval: int
    filename: str


def log_filename(station_id: str, log_type: str, request_id: int, now: dt.datetime) -> str:
    """``security-CP-1-20261122T101500Z-7.jsonl``: safe as a file name anywhere, <= 255."""
    kind, ext = LOG_TYPES[log_type]
    station = _UNSAFE.sub("_", station_id)[:48]
    return f"{kind}-{station}-{now.astimezone(dt.UTC):%Y%m%dT%H%M%SZ}-{request_id}.{ext}"


def supported(url: str) -> bool:
    """Whether ``url`` is one this agent can upload to (HTTP or HTTPS, with a host)."""
    return location_problem(url) is None


def failure_status(error: TransportError) -> str:
    """The OCPP ``UploadLogStatusEnumType`` for a failed upload."""
    if isinstance(error, UploadRefused):
        return "PermissionDenied" if error.status_code in DENIED else "BadMessage"
    return "UploadFailure"  # network trouble, or a place the location policy forbids


async def upload(
    url: str,
    filename: str,
    data: bytes,
    *,
    retries: int,
    retry_interval: float,
    content_type: str = "application/octet-stream",
    timeout: float = 30.0,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    policy: LocationPolicy = DEFAULT_POLICY,
    csms_roots: bytes | None = None,
) -> int:
    """POST ``data`` as the form field ``file``; returns the number of attempts made."""
    last: Exception | None = None
    await location.check(policy, url, proxy=None)
    async with location.client(policy, timeout=timeout, csms_roots=csms_roots) as client:
        for attempt in range(retries + 1):
            if attempt:  # the download's retry policy: exponential back-off with jitter
                await sleep(
                    backoff_delay(attempt, retry_interval, max_backoff=MAX_BACKOFF, rng=_RNG)
                )
            try:
                r = await client.post(url, files={"file": (filename, data, content_type)})
            except httpx.HTTPError as e:
                last = e
                LOG.info("log upload attempt %d failed: %s", attempt + 1, e)
                continue
            if r.is_success:
                return attempt + 1
            if 400 <= r.status_code < 500:
                raise UploadRefused(r.status_code)
            last = TransportError(f"HTTP {r.status_code}")
            LOG.info("log upload attempt %d failed: HTTP %d", attempt + 1, r.status_code)
    raise TransportError(f"log upload failed after {retries + 1} attempts: {last}")
