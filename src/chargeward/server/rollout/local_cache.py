"""Site-local caching: a site's Local Controller downloads a release's image once and serves
it to the site's chargers (OCPP 2.0.1 PublishFirmware / UnpublishFirmware, use case L03/L04).

A Local Controller is a station of the site tagged ``local-controller``.  When the campaign
scheduler is about to dispatch a release to a charger of such a site (:func:`route`):

- the first time, it asks the controller to publish the image (a :class:`SiteCache` row,
  its id the PublishFirmware requestId, the checksum the image's MD5 as OCPP requires) and
  holds the site's dispatches back;
- while the controller downloads and verifies (``PublishFirmwareStatusNotification``), the
  dispatches stay held, at most :data:`PUBLISH_TIMEOUT`;
- once ``Published``, the chargers' UpdateFirmware ``location`` is the controller's, so the
  site's WAN link carries the image once;
- if publishing fails (refused, a download or checksum failure, the controller offline, or
  no answer in time), the site's chargers download from the server as before: the cache
  saves bytes, it is never a way to stop an update.

The controller is transport only: every charger still checks the image against its TUF
listing and OCPP signature, so a controller that serves other bytes gets them refused.  When
the campaign ends the file is unpublished (:func:`unpublish_after`).

    via = await route(s, state, "CP-1", image, campaign_id=7, now=now)
    via.wait, via.location
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from chargeward import audit
from chargeward.crypto.signature import md5_file
from chargeward.server.common import urls
from chargeward.server.store.tables import Campaign, SiteCache, Station, StationTag

if TYPE_CHECKING:  # server.state imports the OCPP listener, which records through here
    from chargeward.server.state import ServerState

LOG = logging.getLogger("chargeward.local_cache")
TAG = "local-controller"
PUBLISH_TIMEOUT = dt.timedelta(minutes=15)
PUBLISH_RETRIES = 3
IN_PROGRESS = frozenset(
    {"Requested", "Accepted", "DownloadScheduled", "Downloading", "Downloaded", "DownloadPaused",
     "ChecksumVerified", "Idle"}
)  # fmt: skip
FAILED = frozenset({"DownloadFailed", "InvalidChecksum", "PublishFailed", "Failed"})


@dataclass(frozen=True)
class Via:
    """Where a charger gets the image: ``location`` (its Local Controller's), or the server
    (None); ``wait``: hold the dispatch, the controller is still publishing."""

    location: str | None = None
    wait: bool = False


DIRECT = Via()


@dataclass
class Router:
    """One tick's routing: memoised per (site, image), and the publications to send after the
    tick's transaction commits."""

    state: ServerState
    campaign_id: int | None
    now: dt.datetime
    to_publish: list[int] = field(default_factory=list)
    _memo: dict[tuple[str, str], Via] = field(default_factory=dict)

    async def route(self, s: AsyncSession, station_id: str, sha256: str) -> Via:
        site = await s.scalar(select(Station.site_id).where(Station.id == station_id))
        if site is None:
            return DIRECT
        key = (site, sha256)
        if key not in self._memo:
            self._memo[key] = await self._site_route(s, site, station_id, sha256)
        return self._memo[key]

    async def _site_route(self, s: AsyncSession, site: str, station_id: str, sha256: str) -> Via:
        lc = await controller_of(s, site)
        if lc is None or lc == station_id:
            return DIRECT
        row = await s.scalar(
            select(SiteCache).where(SiteCache.station_id == lc, SiteCache.sha256 == sha256)
        )
        if row is None or row.status == "Unpublished":
            row = await self._request(s, row, lc, site, sha256)
            return Via(wait=True)
        if row.status == "Published":
            location = pick_location(row.locations)
            if location is not None:
                return Via(location=location)
            _fail(row, "published without an http(s) location", self.now)
            return DIRECT
        if row.status in FAILED:
            return DIRECT
        if self.now - row.requested_at > PUBLISH_TIMEOUT:
            _fail(row, f"not published within {PUBLISH_TIMEOUT}", self.now)
            await _audit_status(s, row, self.now)
            return DIRECT
        return Via(wait=True)

    async def _request(
        self, s: AsyncSession, row: SiteCache | None, lc: str, site: str, sha256: str
    ) -> SiteCache:
        md5 = await asyncio.to_thread(md5_file, self.state.blobs.path(sha256))
        if row is None:
            row = SiteCache(station_id=lc, site_id=site, sha256=sha256, requested_at=self.now)
            s.add(row)
        row.md5, row.campaign_id, row.status = md5, self.campaign_id, "Requested"
        row.locations, row.reason, row.requested_at, row.updated_at = [], None, self.now, self.now
        await s.flush()  # its id is the PublishFirmware requestId
        self.to_publish.append(row.id)
        LOG.info("site %s: asking Local Controller %s to publish %s", site, lc, sha256[:16])
        return row

    async def send(self) -> None:
        """Send the PublishFirmware requests this tick decided (after its commit)."""
        await asyncio.gather(*(publish(self.state, i) for i in self.to_publish))


async def controller_of(s: AsyncSession, site: str) -> str | None:
    """The connected Local Controller of ``site`` (the first by id), if any."""
    found: str | None = await s.scalar(
        select(Station.id)
        .join(StationTag, StationTag.station_id == Station.id)
        .where(Station.site_id == site, StationTag.tag == TAG, Station.connected.is_(True))
        .order_by(Station.id)
        .limit(1)
    )
    return found


def pick_location(locations: Iterable[object]) -> str | None:
    """The controller's https location if it offers one, else its http one."""
    urls_ = [u for u in locations if isinstance(u, str)]
    for scheme in ("https://", "http://"):
        for u in urls_:
            if u.lower().startswith(scheme) and len(u) <= 512:
                return u
    return None


def _fail(row: SiteCache, reason: str, now: dt.datetime) -> None:
    row.status, row.reason, row.updated_at = "Failed", reason[:300], now
    LOG.warning("site %s: Local Controller %s: %s", row.site_id, row.station_id, reason)


async def _audit_status(s: AsyncSession, row: SiteCache, now: dt.datetime) -> None:
    await audit.record(
        s,
        actor=f"station:{row.station_id}",
        action="site_cache.status",
        target=f"site:{row.site_id}",
        details={
            "sha256": row.sha256,
            "request_id": row.id,
            "status": row.status,
            "locations": row.locations,
            "reason": row.reason,
            "campaign_id": row.campaign_id,
        },
        now=now,
    )


async def publish(state: ServerState, cache_id: int) -> str:
    """Send PublishFirmware for ``cache_id``; a refusal or no answer marks it failed."""
    async with state.db.session() as s:
        row = await s.get(SiteCache, cache_id)
        if row is None:
            return "Gone"
        lc, sha256, md5 = row.station_id, row.sha256, row.md5
    now = state.clock()
    expires = int((now + urls.DOWNLOAD_URL_TTL).timestamp())
    location = state.public_url + urls.signed_path(state.url_key, sha256, lc, expires, cache_id)
    cp = await state.station(lc)
    if cp is None:
        answer = "NotConnected"
    else:
        try:
            answer = await cp.publish_firmware(
                location, md5, cache_id, retries=PUBLISH_RETRIES, retry_interval=30
            )
        except Exception as e:  # CALLERROR, timeout or connection lost
            answer = f"Error:{type(e).__name__}"
    async with state.db.session() as s:
        row = await s.get(SiteCache, cache_id)
        if row is not None and answer != "Accepted":
            _fail(row, f"PublishFirmware answered {answer}", state.clock())
            await _audit_status(s, row, state.clock())
        elif row is not None and row.status == "Requested":
            row.status, row.updated_at = "Accepted", state.clock()
    return answer


async def record_status(
    s: AsyncSession,
    station_id: str,
    status: str,
    request_id: int | None,
    locations: list[str],
    now: dt.datetime,
) -> None:
    """A PublishFirmwareStatusNotification from ``station_id`` (unknown requests ignored)."""
    if request_id is None:
        return
    row = await s.get(SiteCache, request_id)
    if row is None or row.station_id != station_id or row.status in ("Unpublished", "Failed"):
        LOG.info("%s: PublishFirmwareStatus %s for no open request", station_id, status)
        return
    row.status, row.updated_at = status[:20], now
    if status == "Published":
        row.locations = [u[:512] for u in locations[:8]]
    if status in FAILED:
        row.reason = f"the Local Controller reported {status}"
    if status == "Published" or status in FAILED:
        await _audit_status(s, row, now)


async def campaign_caches(s: AsyncSession, campaign_id: int) -> list[SiteCache]:
    rows = await s.scalars(
        select(SiteCache).where(SiteCache.campaign_id == campaign_id).order_by(SiteCache.site_id)
    )
    return list(rows.all())


async def unpublish_after(s: AsyncSession, campaign_id: int) -> list[int]:
    """The publications of ``campaign_id``'s release to take down now it ended: those no
    other live campaign of the same release still needs."""
    row = await s.get(Campaign, campaign_id)
    if row is None:
        return []
    others = await s.scalar(
        select(Campaign.id).where(
            Campaign.release_id == row.release_id,
            Campaign.id != campaign_id,
            Campaign.status.in_(("running", "paused", "awaiting_approval")),
        )
    )
    if others is not None:
        return []
    ids = await s.scalars(
        select(SiteCache.id).where(
            SiteCache.campaign_id == campaign_id,
            SiteCache.status.not_in(("Unpublished", *FAILED)),  # failed ones hold nothing
        )
    )
    return list(ids.all())


async def unpublish(state: ServerState, cache_id: int) -> str:
    """Send UnpublishFirmware for ``cache_id``; ``Unpublished`` or ``NoFirmware`` close it."""
    async with state.db.session() as s:
        row = await s.get(SiteCache, cache_id)
        if row is None:
            return "Gone"
        lc, md5 = row.station_id, row.md5
    cp = await state.station(lc)
    try:
        answer = "NotConnected" if cp is None else await cp.unpublish_firmware(md5)
    except Exception as e:
        answer = f"Error:{type(e).__name__}"
    async with state.db.session() as s:
        row = await s.get(SiteCache, cache_id)
        if row is not None and answer in ("Unpublished", "NoFirmware"):
            row.status, row.updated_at = "Unpublished", state.clock()
            await _audit_status(s, row, state.clock())
        elif row is not None:
            LOG.warning("%s: UnpublishFirmware answered %s", lc, answer)
    return answer
