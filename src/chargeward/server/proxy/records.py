"""What proxy mode reads and writes in the database: the images of approved releases, and an
audit entry for each firmware command of the upstream CSMS that was refused.

    hooks = DbProxyHooks(db, clock)
    await hooks.approved_images()      # ApprovedImages(signatures=..., sha256=..., md5=...)
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from chargeward import audit
from chargeward.server.fleet.station_registry import station_actor
from chargeward.server.proxy.policy import ApprovedImages
from chargeward.server.store.db import Database
from chargeward.server.store.tables import Proposal, ReleaseImage, SiteCache

Clock = Callable[[], dt.datetime]
REFUSED_ACTION = "proxy.upstream_firmware_refused"


class DbProxyHooks:
    """:class:`~chargeward.server.proxy.relay.ProxyHooks` on the server's database."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

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
