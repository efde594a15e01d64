"""Helpers of the write-conflict tests (tests/storage/test_write_conflicts.py and
test_bounded_transactions.py): a stored release with two stations, a campaign document, and
checks on lock waits and 503 answers."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

from chargeward.release.bundle import verify_bundle
from chargeward.server.fleet import station_registry
from chargeward.server.rollout import release_catalog
from chargeward.server.store.blobs import BlobStore
from chargeward.server.store.db import Database
from chargeward.server.store.tables import Station
from tests.support.fleet import MODEL, Pki

NOW = dt.datetime(2026, 11, 2, 10, 0, tzinfo=dt.UTC)
WAIT = 20.0  # seconds any one wait may take before the test fails


async def release_and_fleet(db: Database, tmp_path: Path, pki: Pki) -> str:
    bundle = pki.bundle(tmp_path / "r.cwb", "1.1.0", 2, release_class="feature")
    now = dt.datetime.now(dt.UTC)  # the fixture certificates are valid from today
    verified = verify_bundle(bundle, [pki.root_cert], workdir=tmp_path / "x", now=now)
    async with db.session() as s:
        view = await release_catalog.store_release(
            s, verified, BlobStore(tmp_path / "blobs"), actor="alice", now=NOW
        )
        for sid in ("CP-00", "CP-01"):
            await station_registry.register_station(s, sid, actor="alice", model=MODEL, now=NOW)
            row = await s.get(Station, sid)
            assert row is not None
            row.firmware_version = "1.0.0"
    return view.id


def campaign_doc_for(release: str) -> dict[str, Any]:
    return {"name": "c1", "release": release, "stages": {"canary": 1, "then": ["100%"]},
            "jitter": 0, "target": {"models": [MODEL]}}  # fmt: skip


async def waiting_on_a_lock(db: Database) -> bool:
    async with db.engine.connect() as conn:
        waiting = await conn.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        )
    return bool(waiting)


def assert_busy(r: httpx.Response) -> None:
    assert r.status_code == 503, r.text
    assert int(r.headers["Retry-After"]) >= 1
    assert r.json()["error"]["code"] == "unavailable"


def as_async(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def run() -> bool:
        return check()

    return run


async def lock_waiters(db: Database) -> int:
    """How many sessions of this test database wait for a lock now (pg_stat_activity)."""
    async with db.engine.connect() as c:
        n = await c.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE wait_event_type = 'Lock' AND datname = current_database()"
            )
        )
    return int(n or 0)
