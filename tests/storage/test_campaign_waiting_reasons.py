"""Campaigns never stall without a word (issue 28, point 6), on SQLite and PostgreSQL with the
server's clock injected:

- every waiting station carries why, stored by the scheduler and read back by the campaign
  views (offline since its last report, the site's availability floor), counted per code;
- a one-charger site with the default ``keep_available = 1`` is refused at creation, naming the
  site and the fix; with ``allow_unreachable_sites`` its station waits with reason
  ``site_floor`` from the start, the answer warns and the audit entry records the override;
- a 100 % success gate with its one canary offline: after ``stage_deadline`` one
  ``campaign_stage_overdue`` alert names the offline canary and (``on_stage_deadline =
  "pause"``) the campaign is paused saying why; a resumed campaign is not paused again.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from chargeward import audit
from chargeward.audit.sequencer import settle
from chargeward.campaign.spec import CampaignSpecError, parse_spec
from chargeward.server.fleet import alerts, fleet, station_registry
from chargeward.server.rollout import campaign_runs, campaign_scheduler, campaigns
from chargeward.server.state import ServerState
from chargeward.server.store.blobs import BlobStore
from chargeward.server.store.db import Database
from chargeward.server.store.tables import Station
from tests.support.fleet import MODEL, Pki
from tests.support.stored_releases import stored_release

NOW = dt.datetime(2026, 11, 2, 10, 0, tzinfo=dt.UTC)
SEEN = NOW - dt.timedelta(hours=3)


async def _fleet(
    db: Database, tmp_path: Path, pki: Pki, stations: dict[str, tuple[str | None, bool]]
) -> str:
    """Release 1.1.0 and ``stations`` (id -> (site, connected)) running 1.0.0; sites in UTC
    without windows.  An offline station was last seen at :data:`SEEN`."""
    release = await stored_release(db, tmp_path, pki, "1.1.0", 2, NOW)
    async with db.session() as s:
        for site in sorted({site for site, _ in stations.values() if site}):
            await fleet.create_site(
                s, fleet.SiteInput(site, site.title(), None, "UTC", []), actor="t", now=NOW
            )
        for sid, (site, up) in stations.items():
            await station_registry.register_station(s, sid, actor="alice", model=MODEL, now=NOW)
            row = await s.get(Station, sid)
            assert row is not None
            row.firmware_version, row.site_id, row.connected = "1.0.0", site, up
            row.last_seen = NOW if up else SEEN
    return release


def _state(db: Database, tmp_path: Path, clock: list[dt.datetime]) -> ServerState:
    state = ServerState(tmp_path, db, BlobStore(tmp_path / "blobs"), b"k" * 32, "http://x")
    state.clock = lambda: clock[0]
    return state


def _doc(release: str, **kw: Any) -> dict[str, Any]:
    doc = {"name": "c1", "release": release, "target": {"models": [MODEL]}, "jitter": 0,
           "stages": {"canary": 1, "then": ["100%"]}, "gates": {"success": "100%"}}  # fmt: skip
    doc.update(kw)
    return doc


async def _status(db: Database, ref: int) -> tuple[str, int, str | None]:
    async with db.snapshot() as s:
        row = await campaigns.get_campaign(s, ref)
        return row.status, row.stage, row.pause_reason


async def _reasons(db: Database, ref: int) -> dict[str, tuple[str, str] | None]:
    async with db.snapshot() as s:
        found = await campaigns.station_runs(s, ref)
    return {r.station_id: (w.code, w.text) if w else None for r, w in found}


async def test_waiting_stations_say_why_in_the_campaign_views(
    db: Database, tmp_path: Path, pki: Pki
) -> None:
    release = await _fleet(
        db, tmp_path, pki,
        {"CP-1": ("depot", True), "CP-2": ("depot", True), "CP-3": (None, False)},
    )  # fmt: skip
    doc = _doc(release, stages={"canary": "100%"}, concurrency={"per_site": 2})
    async with db.session() as s:
        view = await campaigns.create_campaign(s, parse_spec(doc), actor="alice", now=NOW)
    assert view.waiting == {"next_tick": 3}  # not looked at yet
    clock = [NOW]
    orders = await campaign_scheduler.tick_campaign(_state(db, tmp_path, clock), view.id)
    assert len(orders) == 1
    sent = orders[0].station_id
    held = ({"CP-1", "CP-2"} - {sent}).pop()
    reasons = await _reasons(db, view.id)
    assert reasons["CP-3"] == ("offline", "offline since 2026-11-02 07:00 UTC")
    assert reasons[held] == ("site_floor", "site depot has 1 available charger; keep_available = 1")
    async with db.snapshot() as s:
        counted = (await campaigns.campaign_view(s, view.id)).waiting
        ((_, offline),) = await campaigns.station_runs(s, view.id, "CP-3")
    assert counted["offline"] == 1 and counted["site_floor"] == 1
    assert offline is not None and offline.since == SEEN  # offline since its last report

    clock[0] = NOW + dt.timedelta(minutes=1)  # the same reason: its since is kept
    await campaign_scheduler.tick_campaign(_state(db, tmp_path, clock), view.id)
    async with db.snapshot() as s:
        found = dict(await campaigns.station_runs(s, view.id, held))
    ((_, why),) = found.items()
    assert why is not None and why.code == "site_floor" and why.since == NOW


async def test_a_one_charger_site_is_refused_at_creation_unless_allowed(
    db: Database, tmp_path: Path, pki: Pki
) -> None:
    release = await _fleet(
        db, tmp_path, pki, {"CP-1": ("corner", True), "CP-2": ("depot", True),
                            "CP-3": ("depot", True)},
    )  # fmt: skip
    async with db.session() as s:
        with pytest.raises(CampaignSpecError) as refused:
            await campaigns.create_campaign(s, parse_spec(_doc(release)), actor="alice", now=NOW)
    assert refused.value.field == "concurrency.keep_available"
    message = str(refused.value)
    assert "site corner has 1 charger and keep_available = 1 (CP-1)" in message
    assert "depot" not in message  # two chargers: one may update
    assert "Lower concurrency.keep_available" in message and "allow_unreachable_sites" in message
    async with db.snapshot() as s:
        assert await campaigns.list_campaigns(s) == []

    async with db.session() as s:  # keep_available = 0 is fine as it is
        await campaigns.create_campaign(
            s, parse_spec(_doc(release, name="c0", concurrency={"keep_available": 0})),
            actor="alice", now=NOW,
        )  # fmt: skip
        await campaigns.abort(s, "c0", actor="alice", now=NOW)

    async with db.session() as s:
        view = await campaigns.create_campaign(
            s, parse_spec(_doc(release)), actor="alice", now=NOW, allow_unreachable_sites=True
        )
    assert view.warnings[0] == (
        "site corner has 1 charger and keep_available = 1 (CP-1): its 1 target station wait "
        "(reason site_floor) until the site has more chargers"
    )
    assert "success gate at 100%" in view.warnings[1]
    reasons = await _reasons(db, view.id)
    assert reasons["CP-1"] == (
        "site_floor",
        "site corner has 1 charger; keep_available = 1: none may be updated until the site "
        "has more",
    )
    async with db.snapshot() as s:
        created = [e for e in await audit.entries(s, target=f"campaign:{view.id}")
                   if e.action == "campaign.created"]  # fmt: skip
    assert created[0].details["allow_unreachable_sites"] is True
    assert created[0].details["unreachable_sites"] == {
        "corner": {"chargers": 1, "stations": ["CP-1"]}
    }


@pytest.mark.parametrize("action", ["pause", "alert"])
async def test_an_offline_canary_under_a_full_success_gate_is_reported_at_the_deadline(
    db: Database, tmp_path: Path, pki: Pki, action: str
) -> None:
    release = await _fleet(db, tmp_path, pki, {"CP-1": (None, True), "CP-2": (None, True)})
    doc = _doc(release, stage_deadline="2d", on_stage_deadline=action)
    async with db.session() as s:
        view = await campaigns.create_campaign(s, parse_spec(doc), actor="alice", now=NOW)
        runs = await campaign_runs.load_runs(s, view.id)
        canary = next(sid for sid, (_, run) in runs.items() if run.stage == 0)
        row = await s.get(Station, canary)
        assert row is not None
        row.connected, row.last_seen = False, SEEN  # the canary went offline for good
    clock = [NOW]
    state = _state(db, tmp_path, clock)

    async def tick_at(at: dt.datetime) -> None:
        clock[0] = at
        assert await campaign_scheduler.tick_campaign(state, view.id, join=False) == []

    async def overdue() -> list[Any]:
        async with db.snapshot() as s:
            return await alerts.list_alerts(s, kind="campaign_stage_overdue")

    await tick_at(NOW)
    await tick_at(NOW + dt.timedelta(days=2) - dt.timedelta(seconds=1))
    assert await overdue() == []
    async with db.snapshot() as s:
        assert (await campaigns.campaign_view(s, view.id)).waiting == {"offline": 1, "stage": 1}

    await tick_at(NOW + dt.timedelta(days=2))
    (alert,) = await overdue()
    assert alert.station_id == f"campaign:{view.id}"
    assert f"offline 1 ({canary})" in alert.message
    assert alert.details["waiting"] == {"offline": 1}
    assert alert.details["waiting_stations"] == {"offline": [canary]}
    await settle(db.session)  # the tick queued its audit entries (PostgreSQL)
    async with db.snapshot() as s:
        trail = [e.details.get("note", "") for e in await audit.entries(
            s, target=f"campaign:{view.id}") if e.action == "campaign.progress"]  # fmt: skip
        paused_alerts = await alerts.list_alerts(s, kind="campaign_paused")
    assert any(n.startswith("overdue: stage 0 not through its success gate 2d") for n in trail)
    assert paused_alerts == []  # the overdue alert says it: one alert, not two
    status, stage, pause_reason = await _status(db, view.id)
    if action == "alert":
        assert (status, stage) == ("running", 0)
        assert alert.severity == "warning"
    else:
        assert status == "paused" and alert.severity == "critical"
        assert pause_reason is not None and f"offline 1 ({canary})" in pause_reason
        assert "paused: stage 0 overdue" in trail
        assert (await _reasons(db, view.id))[canary] == (
            "paused",
            f"campaign paused: {pause_reason}",
        )
        async with db.session() as s:  # an operator looked and lets it go on
            await campaigns.resume(s, view.id, actor="alice", now=clock[0])

    for days in (3, 14):  # once per stage: no second alert, no second pause
        await tick_at(NOW + dt.timedelta(days=days))
    assert len(await overdue()) == 1
    assert (await _status(db, view.id))[:2] == ("running", 0)
    assert (await _reasons(db, view.id))[canary] == (
        "offline",
        "offline since 2026-11-02 07:00 UTC",
    )
