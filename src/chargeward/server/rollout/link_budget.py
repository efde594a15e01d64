"""The link budget of firmware downloads: when and how fast a site's chargers may download,
and what the server sent to each station and for each campaign.

A site may set ``download_windows`` (weekly windows in its time zone, like its maintenance
windows) and ``bandwidth_limit`` (bytes per second for all its downloads together, this
process).  The download route (``server.api.FirmwareFile``) then

- answers ``503`` with ``Retry-After`` (seconds until the next window opens) outside the
  windows, before sending a byte; the campaign engine sets each UpdateFirmware's
  ``retrieveDateTime`` to the window's opening (:func:`retrieve_at`), so a charger waits for
  it instead of asking;
- paces the site's downloads through one token bucket (:class:`Pacer`);
  site budgets are read at most every 30 s per station (:class:`Budgets`);
- counts the body bytes actually sent and, when the response ends (finished or cut), adds
  them to ``download_usage`` for (station, request, file), with the campaign whose update it
  was.  A resumed download adds only what the resumption sent.

    budget = await site_budget(session, "CP-1")
    budget.closed_for(now)      # seconds until a window opens; None: open
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.types import Message, Receive, Scope, Send

from chargeward.model.fleet import MaintenanceWindow, in_window, next_window_start, parse_windows
from chargeward.server.store.db import Database
from chargeward.server.store.tables import CampaignStation, DownloadUsage, Site, SiteCache, Station

LOG = logging.getLogger("chargeward.downloads")
MAX_RETRY_AFTER_S = 24 * 3600
MIN_BANDWIDTH = 1024  # bytes/s: a lower cap would hold a connection open for hours per MiB


@dataclass(frozen=True)
class SiteBudget:
    """A site's download windows and bandwidth cap (none: no limits)."""

    site_id: str | None = None
    timezone: str = "UTC"
    windows: tuple[MaintenanceWindow, ...] = ()
    bandwidth: int | None = None

    def closed_for(self, now: dt.datetime) -> int | None:
        """Seconds until the next download window opens, or None when downloads may run."""
        if not self.windows or in_window(self.windows, self.timezone, now):
            return None
        opens = next_window_start(self.windows, self.timezone, now)
        if opens is None:  # pragma: no cover - windows always open within a week
            return MAX_RETRY_AFTER_S
        return max(1, min(MAX_RETRY_AFTER_S, int((opens - now).total_seconds()) + 1))


NO_BUDGET = SiteBudget()


def budget_of(site: Site | None) -> SiteBudget:
    if site is None:
        return NO_BUDGET
    return SiteBudget(
        site.id,
        site.timezone,
        tuple(parse_windows(site.download_windows or [])),
        site.bandwidth_limit,
    )


async def site_budget(s: AsyncSession, station_id: str) -> SiteBudget:
    """The budget of the site ``station_id`` belongs to (no limits without one)."""
    site_id = await s.scalar(select(Station.site_id).where(Station.id == station_id))
    return budget_of(await s.get(Site, site_id) if site_id else None)


class Budgets:
    """Station -> site budget, looked up at most every ``ttl`` seconds per station (a
    download route that read the database on every resumed request would be the cost of a
    rollout, ADR 0009); at most ``size`` stations held."""

    def __init__(self, ttl: float = 30.0, size: int = 100_000) -> None:
        self.ttl = ttl
        self.size = size
        self._held: dict[str, tuple[float, SiteBudget]] = {}

    async def get(self, db: Database, station_id: str) -> SiteBudget:
        now = time.monotonic()
        held = self._held.get(station_id)
        if held is not None and held[0] > now:
            return held[1]
        async with db.snapshot() as s:
            budget = await site_budget(s, station_id)
        if len(self._held) >= self.size:
            self._held.clear()
        self._held[station_id] = (now + self.ttl, budget)
        return budget


def retrieve_at(budget: SiteBudget, now: dt.datetime) -> dt.datetime:
    """When a charger of the site should start downloading: now, or the next window."""
    wait = budget.closed_for(now)
    if wait is None:
        return now
    return next_window_start(budget.windows, budget.timezone, now) or now


class Pacer:
    """A token bucket: at most ``rate`` bytes per second on average, bursts of 1/8 s."""

    def __init__(
        self,
        rate: int,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.rate = rate
        self.burst = max(16 * 1024, rate // 8)
        self.tokens = float(self.burst)
        self._clock = clock
        self._sleep = sleep
        self._last = clock()
        self._lock = asyncio.Lock()

    async def take(self, n: int) -> None:
        async with self._lock:  # one waiter at a time: the site's downloads share fairly
            now = self._clock()
            self.tokens = min(self.burst, self.tokens + (now - self._last) * self.rate) - n
            self._last = now
            if self.tokens < 0:
                await self._sleep(-self.tokens / self.rate)


class Pacers:
    """One :class:`Pacer` per site and rate, in this process."""

    def __init__(self) -> None:
        self._by_site: dict[str, Pacer] = {}

    def get(self, budget: SiteBudget) -> Pacer | None:
        if budget.bandwidth is None or budget.site_id is None:
            return None
        pacer = self._by_site.get(budget.site_id)
        if pacer is None or pacer.rate != budget.bandwidth:
            pacer = self._by_site[budget.site_id] = Pacer(budget.bandwidth)
        return pacer


def counting_send(send: Send, pacer: Pacer | None, sent: list[int]) -> Send:
    """``send``, paced by ``pacer``, adding each body chunk's length to ``sent[0]``."""

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.body":
            body = message.get("body", b"")
            if body and pacer is not None:
                await pacer.take(len(body))
            await send(message)
            sent[0] += len(body)
            return
        await send(message)

    return wrapped


class Usage:
    """Adds bytes sent to ``download_usage``, one upsert per response."""

    def __init__(self, db: Database, clock: Callable[[], dt.datetime]) -> None:
        self.db = db
        self.clock = clock

    async def add(self, station_id: str, request_id: int, sha256: str, sent: int) -> None:
        now = self.clock()
        try:
            async with self.db.session() as s:
                await _add(s, station_id, request_id, sha256, sent, now)
        except Exception:  # the download went out; a lost count must not fail it
            LOG.exception("%s: could not record %d bytes sent", station_id, sent)


async def _campaign_of(s: AsyncSession, station_id: str, request_id: int) -> int | None:
    if request_id <= 0:
        return None
    found = await s.scalar(
        select(CampaignStation.campaign_id).where(
            CampaignStation.station_id == station_id, CampaignStation.request_id == request_id
        )
    )
    if found is not None:
        return found
    return await s.scalar(  # a Local Controller's publication for a campaign
        select(SiteCache.campaign_id).where(
            SiteCache.station_id == station_id, SiteCache.id == request_id
        )
    )


async def _add(
    s: AsyncSession, station_id: str, request_id: int, sha256: str, sent: int, now: dt.datetime
) -> None:
    campaign = await _campaign_of(s, station_id, request_id)
    insert = pg_insert if s.get_bind().dialect.name == "postgresql" else sqlite_insert
    stmt = insert(DownloadUsage).values(
        station_id=station_id,
        request_id=request_id,
        sha256=sha256,
        campaign_id=campaign,
        bytes_sent=sent,
        requests=1,
        first_at=now,
        last_at=now,
    )
    await s.execute(
        stmt.on_conflict_do_update(
            index_elements=["station_id", "request_id", "sha256"],
            set_={
                "bytes_sent": DownloadUsage.bytes_sent + sent,
                "requests": DownloadUsage.requests + 1,
                "last_at": now,
            },
        )
    )


# -- reading ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class StationUsage:
    station_id: str
    bytes_sent: int
    requests: int


async def campaign_usage(s: AsyncSession, campaign_id: int) -> list[StationUsage]:
    """Bytes the server sent for ``campaign_id``, per station (Local Controllers included)."""
    rows = await s.execute(
        select(
            DownloadUsage.station_id,
            func.sum(DownloadUsage.bytes_sent),
            func.sum(DownloadUsage.requests),
        )
        .where(DownloadUsage.campaign_id == campaign_id)
        .group_by(DownloadUsage.station_id)
        .order_by(DownloadUsage.station_id)
    )
    return [StationUsage(sid, int(b or 0), int(n or 0)) for sid, b, n in rows.all()]


async def station_usage(s: AsyncSession, station_id: str) -> dict[str, Any]:
    """Bytes the server sent to ``station_id``, in all and per campaign."""
    rows = await s.execute(
        select(
            DownloadUsage.campaign_id,
            func.sum(DownloadUsage.bytes_sent),
            func.sum(DownloadUsage.requests),
        )
        .where(DownloadUsage.station_id == station_id)
        .group_by(DownloadUsage.campaign_id)
    )
    per = {c: (int(b or 0), int(n or 0)) for c, b, n in rows.all()}
    return {
        "bytes_sent": sum(b for b, _ in per.values()),
        "requests": sum(n for _, n in per.values()),
        "campaigns": {str(c): per[c][0] for c in sorted(c for c in per if c is not None)},
    }


async def respond(
    scope: Scope,
    receive: Receive,
    send: Send,
    app: Callable[[Scope, Receive, Send], Any],
    *,
    pacer: Pacer | None,
    on_done: Callable[[int], Any],
) -> None:
    """Run the response ``app`` with paced, counted body bytes; ``on_done(bytes)`` after it
    ends, however it ends (a client that goes away mid-body still counts what it got)."""
    sent = [0]
    try:
        await app(scope, receive, counting_send(send, pacer, sent))
    finally:
        if sent[0]:
            await asyncio.shield(on_done(sent[0]))
