"""The campaign scheduler on SQLite and PostgreSQL with the server's clock injected: a station
whose window has less left than the install needs is not sent UpdateFirmware until the next
window, and the campaign's ``install_duration`` is read back from the stored campaign."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from chargeward.campaign.spec import parse_spec
from chargeward.release.bundle import verify_bundle
from chargeward.server.fleet import fleet, station_registry
from chargeward.server.rollout import campaign_runs, campaign_scheduler, campaigns, release_catalog
from chargeward.server.state import ServerState
from chargeward.server.store.blobs import BlobStore
from chargeward.server.store.db import Database
from chargeward.server.store.tables import Station
from tests.support.fleet import MODEL, Pki

# Tuesday 10 November 2026: London is on GMT, so its 02:00-05:00 window is 02:00-05:00 UTC.
DAY = dt.datetime(2026, 11, 10, tzinfo=dt.UTC)
NIGHT = [{"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "start": "02:00",
          "end": "05:00"}]  # fmt: skip


async def _setup(db: Database, tmp_path: Path, pki: Pki) -> str:
    bundle = pki.bundle(tmp_path / "r.cwb", "1.1.0", 2)
    verified = verify_bundle(
        bundle, [pki.root_cert], workdir=tmp_path / "x", now=dt.datetime.now(dt.UTC)
    )
    async with db.session() as s:
        release = await release_catalog.store_release(
            s, verified, BlobStore(tmp_path / "blobs"), actor="alice", now=DAY
        )
        await fleet.create_site(
            s, fleet.SiteInput("depot", "Depot", None, "Europe/London", NIGHT), actor="t", now=DAY
        )
        await station_registry.register_station(s, "CP-1", actor="alice", model=MODEL, now=DAY)
        row = await s.get(Station, "CP-1")
        assert row is not None
        row.firmware_version, row.site_id = "1.0.0", "depot"
        row.connected = True  # stored as connected; this process holds no connection
    return release.id


async def test_a_station_is_not_sent_its_update_with_too_little_of_its_window_left(
    db: Database, tmp_path: Path, pki: Pki
) -> None:
    release = await _setup(db, tmp_path, pki)
    doc = {"name": "night", "release": release, "stages": {"canary": 1}, "jitter": 0,
           "target": {"models": [MODEL]}, "concurrency": {"keep_available": 0},
           "install_duration": "20m"}  # fmt: skip
    async with db.session() as s:
        view = await campaigns.create_campaign(s, parse_spec(doc), actor="alice", now=DAY)
    assert view.status == "running"
    state = ServerState(tmp_path, db, BlobStore(tmp_path / "blobs"), b"k" * 32, "http://x")

    now = DAY.replace(hour=4, minute=45)  # 15 min left, the install needs 20
    state.clock = lambda: now
    assert await campaign_scheduler.tick_campaign(state, view.id) == []
    async with db.snapshot() as s:
        (_, run) = (await campaign_runs.load_runs(s, view.id))["CP-1"]
    assert (run.state, run.attempts, run.request_id) == ("waiting", 0, None)

    now = DAY.replace(hour=5, minute=30)  # the window has closed; 2 h ahead is not yet
    assert await campaign_scheduler.tick_campaign(state, view.id) == []

    now = DAY.replace(hour=4, minute=40) + dt.timedelta(days=1)  # the next night, 20 min left
    orders = await campaign_scheduler.tick_campaign(state, view.id)
    assert [o.station_id for o in orders] == ["CP-1"]
    async with db.snapshot() as s:
        (_, run) = (await campaign_runs.load_runs(s, view.id))["CP-1"]
    assert run.request_id == orders[0].request_id and run.install_at is None  # no waiting
