"""Releases stored straight into a server database, and the record of their publication, for
tests of what campaigns may use (no upload over HTTP, no TUF approvals)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from chargeward.release.bundle import verify_bundle
from chargeward.server.rollout import release_catalog
from chargeward.server.store.blobs import BlobStore
from chargeward.server.store.db import Database
from chargeward.server.store.tables import Proposal
from tests.support.fleet import Pki


async def stored_release(
    db: Database,
    workdir: Path,
    pki: Pki,
    version: str,
    security_version: int,
    at: dt.datetime,
    release_class: str = "feature",
) -> str:
    """Build, verify and store a release signed by ``pki``, uploaded at ``at``; its id."""
    name = f"{version}-{security_version}"
    bundle = pki.bundle(
        workdir / f"r-{name}.cwb", version, security_version, release_class=release_class
    )
    now = dt.datetime.now(dt.UTC)  # the fixture certificates are valid from today
    verified = verify_bundle(bundle, [pki.root_cert], workdir=workdir / f"x-{name}", now=now)
    async with db.session() as s:
        view = await release_catalog.store_release(
            s, verified, BlobStore(workdir / "blobs"), actor="alice", now=at
        )
    return view.id


async def mark_published(db: Database, release_id: str, at: dt.datetime) -> None:
    """What `chargeward release publish` stores once the approvers signed the proposal."""
    async with db.session() as s:
        s.add(Proposal(
            kind="release", release_id=release_id, base_version=1, metadata_json="{}",
            state="published", created_by="carol", created_at=at, published_at=at,
            targets_version=2,
        ))  # fmt: skip
