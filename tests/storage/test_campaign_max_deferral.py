"""A canary whose session end was never reported (``active_transactions`` stays set) holds its
stage only up to the campaign's ``max_deferral``: the scheduler then skips it, raises an alert,
audits why, goes on with the next stage, and an operator can retry it (SQLite and
PostgreSQL; the server's clock is injected)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from chargeward import audit
from chargeward.audit.sequencer import settle
from chargeward.campaign.spec import parse_spec
from chargeward.server.fleet import alerts, station_registry
from chargeward.server.rollout import campaign_runs, campaign_scheduler, campaigns
from chargeward.server.state import ServerState
from chargeward.server.store.blobs import BlobStore
from chargeward.server.store.db import Database
from chargeward.server.store.tables import Station
from tests.support.fleet import MODEL, Pki
from tests.support.stored_releases import stored_release

NOW = dt.datetime(2026, 11, 2, 10, 0, tzinfo=dt.UTC)


async def test_a_canary_stuck_charging_is_skipped_after_max_deferral_and_reported(
    db: Database, tmp_path: Path, pki: Pki
) -> None:
    release = await stored_release(db, tmp_path, pki, "1.1.0", 2, NOW, release_class="feature")
    ids = ["CP-00", "CP-01"]
    async with db.session() as s:
        for sid in ids:
            await station_registry.register_station(s, sid, actor="alice", model=MODEL, now=NOW)
        doc = {"name": "c1", "release": release, "stages": {"canary": 1, "then": ["100%"]},
               "jitter": 0, "target": {"models": [MODEL]}, "max_deferral": "2h",
               "gates": {"success": "100%", "error": 1}}  # fmt: skip
        view = await campaigns.create_campaign(s, parse_spec(doc), actor="alice", now=NOW)
        runs = await campaign_runs.load_runs(s, view.id)
        canary = next(sid for sid, (_, run) in runs.items() if run.stage == 0)
        for sid in ids:
            station = await s.get(Station, sid)
            assert station is not None
            station.firmware_version, station.connected = "1.0.0", True
            if sid == canary:  # a session whose TransactionEvent(Ended) was lost
                station.active_transactions = {"1": "tx-lost"}
    clock = [NOW]
    state = ServerState(tmp_path, db, BlobStore(tmp_path / "blobs"), b"k" * 32, "http://x")
    state.clock = lambda: clock[0]

    assert await campaign_scheduler.tick_campaign(state, view.id, join=False) == []
    clock[0] = NOW + dt.timedelta(hours=1, minutes=59)
    assert await campaign_scheduler.tick_campaign(state, view.id, join=False) == []
    async with db.snapshot() as s:
        assert (await campaign_runs.load_runs(s, view.id))[canary][1].state == "deferred"

    clock[0] = NOW + dt.timedelta(hours=2)
    orders = await campaign_scheduler.tick_campaign(state, view.id, join=False)
    assert [o.station_id for o in orders] == [sid for sid in ids if sid != canary]
    await settle(db.session)  # the tick queued its audit entries (PostgreSQL)
    async with db.snapshot() as s:
        stored = await campaigns.get_campaign(s, view.id)
        assert stored.status == "running" and stored.stage == 1, stored.pause_reason
        run = (await campaign_runs.load_runs(s, view.id))[canary][1]
        assert run.state == "canceled" and run.reason == "skipped: charging for over 2h"
        raised = await alerts.list_alerts(s, station_id=canary)
        trail = [
            e.details.get("note") for e in await audit.entries(s, target=f"campaign:{view.id}")
        ]
    assert [a.kind for a in raised] == ["campaign_station_skipped"]
    assert f"{canary} skipped: charging for over 2h" in trail

    async with db.session() as s:  # the operator retries it once the station is looked at
        await campaigns.retry_failed(s, view.id, actor="alice", now=clock[0])
        assert (await campaign_runs.load_runs(s, view.id))[canary][1].state == "waiting"
