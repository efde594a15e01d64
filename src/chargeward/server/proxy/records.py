"""What proxy mode reads and writes in the database: the images of approved releases, each
station's settings (:mod:`.settings`), and an audit entry for each firmware command of the
upstream CSMS that was refused.

    hooks = DbProxyHooks(db, clock, data_dir)
    await hooks.approved_images()      # ApprovedImages(signatures=..., sha256=..., md5=...)
    await hooks.station_settings("CP-1")   # StationSettings(url_template=..., ...)
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import select

from chargeward import audit
from chargeward.server.fleet.station_registry import station_actor
from chargeward.server.proxy import settings
from chargeward.server.proxy.policy import ApprovedImages
from chargeward.server.proxy.upstream import StationSettings
from chargeward.server.store.db import Database
from chargeward.server.store.tables import Proposal, ReleaseImage, SiteCache

Clock = Callable[[], dt.datetime]
REFUSED_ACTION = "proxy.upstream_firmware_refused"


class DbProxyHooks:
    """:class:`~chargeward.server.proxy.relay.ProxyHooks` on the server's database."""

    def __init__(self, db: Database, clock: Clock, data_dir: Path | None = None) -> None:
        self.db = db
        self.clock = clock
        self.data_dir = data_dir  # where the sealing key of stored credentials is; None: none

    async def station_settings(self, station_id: str) -> StationSettings:
        key = settings.load_or_create_key(self.data_dir) if self.data_dir else None
        async with self.db.snapshot() as s:
            return await settings.resolve(s, station_id, key)

    async def approved_images(self) -> ApprovedImages:
        """Images of releases whose approval proposal was published (k-of-n signed)."""
        async with self.db.snapshot() as s:
            published = select(Proposal.release_id).where(
                Proposal.kind == "release", Proposal.state == "published"
            )
            rows = (
                await s.execute(
                    select(ReleaseImage.signature, ReleaseImage.sha256).where(
                        ReleaseImage.release_id.in_(published)
                    )
                )
            ).all()
            digests = frozenset(r.sha256 for r in rows)
            md5 = (
                await s.scalars(select(SiteCache.md5).where(SiteCache.sha256.in_(digests)))
            ).all()
        return ApprovedImages(
            signatures=frozenset(r.signature for r in rows),
            sha256=digests,
            md5=frozenset(m.lower() for m in md5),
        )

    async def refused(self, station_id: str, reason: str, details: dict[str, Any]) -> None:
        async with self.db.session() as s:
            await audit.record(
                s,
                actor=f"upstream:{station_actor(station_id)}",
                action=REFUSED_ACTION,
                target=station_id,
                details={**details, "reason": reason},
                now=self.clock(),
            )
