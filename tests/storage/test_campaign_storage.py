"""Campaigns in the database, on SQLite and PostgreSQL: creation against the fleet registry,
the two-person rule, station reports reaching the run that sent the request, the scheduler's
tick (dispatch stored before it is sent), and the security standing policy."""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from chargeward import audit
from chargeward.audit.sequencer import settle
from chargeward.campaign import machine
from chargeward.campaign.spec import CampaignSpecError, parse_spec
from chargeward.errors import Conflict
from chargeward.server.fleet import station_registry
from chargeward.server.rollout import (
    campaign_runs,
    campaign_scheduler,
    campaigns,
    update_orders,
)
from chargeward.server.rollout.repository import record_available_update
from chargeward.server.state import ServerState
from chargeward.server.store.blobs import BlobStore
from chargeward.server.store.db import Database
from chargeward.server.store.tables import FirmwareUpdate, Station
from tests.support.fleet import MODEL, Pki
from tests.support.stored_releases import stored_release

NOW = dt.datetime(2026, 11, 2, 10, 0, tzinfo=dt.UTC)


async def _release(db: Database, tmp_path: Path, pki: Pki, version: str, cls: str) -> str:
    return await stored_release(db, tmp_path, pki, version, 2, NOW, release_class=cls)


async def _fleet(db: Database, n: int) -> list[str]:
    ids = [f"CP-{i:02d}" for i in range(n)]
    async with db.session() as s:
        for sid in ids:
            await station_registry.register_station(s, sid, actor="alice", model=MODEL, now=NOW)
            row = await s.get(Station, sid)
            assert row is not None
            row.firmware_version = "1.0.0"
    return ids


def _spec(release: str, **kw: object) -> dict[str, object]:
    return {"name": "c1", "release": release, "stages": {"canary": 1, "then": ["100%"]},
            "jitter": 0, "target": {"models": [MODEL]}, **kw}  # fmt: skip


async def test_two_person_rule_and_reports_reach_the_run_by_request_id(
    db: Database, tmp_path: Path, pki: Pki
) -> None:
    release = await _release(db, tmp_path, pki, "1.1.0", "feature")
    ids = await _fleet(db, 5)
    async with db.session() as s:
        view = await campaigns.create_campaign(
            s, parse_spec(_spec(release)), actor="alice", now=NOW, approval_threshold=3
        )
    assert view.status == "awaiting_approval" and [st.size for st in view.stages] == [1, 4]
    async with db.session() as s:
        with pytest.raises(Conflict, match="two-person rule"):
            await campaigns.approve(s, view.id, actor="alice", now=NOW)
    async with db.session() as s:
        approved = await campaigns.approve(s, view.id, actor="bob", now=NOW)
    assert approved.status == "running" and approved.approved_by == "bob"

    # A second campaign cannot take stations another live campaign holds.
    async with db.session() as s:
        with pytest.raises(Conflict, match="selects no station"):
            await campaigns.create_campaign(
                s, parse_spec({**_spec(release), "name": "c2"}), actor="carol", now=NOW
            )
        with pytest.raises(CampaignSpecError, match="only security releases"):
            await campaigns.create_campaign(
                s, parse_spec({**_spec(release), "name": "c3", "bypass_windows": True}),
                actor="carol", now=NOW,
            )  # fmt: skip

    # The scheduler's tick stores the dispatch with its requestId before sending; a station
    # that no node holds never receives it (NotConnected), which costs none of its attempts.
    state = ServerState(tmp_path, db, BlobStore(tmp_path / "blobs"), b"k" * 32, "http://x")
    state.clock = lambda: NOW
    async with db.session() as s:
        for sid in ids:  # stored as connected, but this process holds no connection
            row = await s.get(Station, sid)
            assert row is not None
            row.connected = True
    orders = await campaign_scheduler.tick_campaign(state, view.id)
    assert len(orders) == 1
    async with db.snapshot() as s:
        runs = await campaign_runs.load_runs(s, view.id)
        canary = next(sid for sid, (_, r) in runs.items() if r.stage == 0)
        run = runs[canary][1]
        update = await s.get(FirmwareUpdate, orders[0].request_id)
        assert update is not None and update.response_status == "NotConnected"
    assert (run.state, run.attempts, run.request_id) == ("waiting", 0, orders[0].request_id)
    assert run.reason == "UpdateFirmware NotConnected"

    # A status with that requestId moves that run; one with another id moves nothing.
    async with db.session() as s:
        await campaign_runs.on_station_event(
            s, canary, machine.Status(NOW, "Downloading"), request_id=orders[0].request_id + 99
        )
        unmoved = await campaigns.station_run(s, view.id, canary)
    assert unmoved == run


async def test_resume_acknowledges_errors_and_the_security_policy_joins_reporters(
    db: Database, tmp_path: Path, pki: Pki
) -> None:
    security = await _release(db, tmp_path, pki, "1.0.1", "security")
    ids = await _fleet(db, 3)
    spec = _spec(security, target={"stations": ids[:2]}, gates={"error": 1})
    async with db.session() as s:
        view = await campaigns.create_campaign(s, parse_spec(spec), actor="alice", now=NOW)
        runs = await campaign_runs.load_runs(s, view.id)
        row, run = next(v for v in runs.values() if v[1].stage == 0)  # the canary failed
        campaign_runs.store_run(row, replace(run, state="failed", reason="DownloadFailed"), NOW)
        campaign_row = await campaigns.get_campaign(s, view.id)
        campaign_row.status = "paused"
    async with db.session() as s:
        resumed = await campaigns.resume(s, view.id, actor="bob", now=NOW)
        stored = await campaigns.get_campaign(s, view.id)
        assert list(stored.gate_baseline) == [1, 1]
    assert resumed.status == "running" and resumed.pause_reason is None

    # The third station was not targeted; it reports the security release as available.
    async with db.session() as s:
        await record_available_update(
            s, ids[2], {"target": "t", "version": "1.0.1", "security_version": 2}, now=NOW
        )
    async with db.snapshot() as s:
        joined = await campaigns.station_run(s, view.id, ids[2])
        trail = await audit.entries(s, target=f"campaign:{view.id}")
    assert joined.state == "pending" and joined.stage == 0
    assert any(
        e.action == "campaign.joined" and e.details["reason"] == "security update reported"
        for e in trail
    )


async def test_a_station_that_matches_later_joins_at_the_last_stage(
    db: Database, tmp_path: Path, pki: Pki
) -> None:
    release = await _release(db, tmp_path, pki, "1.1.0", "feature")
    await _fleet(db, 2)
    async with db.session() as s:
        view = await campaigns.create_campaign(s, parse_spec(_spec(release)), actor="a", now=NOW)
        await station_registry.register_station(s, "CP-NEW", actor="a", model=MODEL, now=NOW)
        await station_registry.register_station(s, "CP-OTHER", actor="a", model="DC50", now=NOW)
    state = ServerState(tmp_path, db, BlobStore(tmp_path / "blobs"), b"k" * 32, "http://x")
    state.clock = lambda: NOW
    await campaign_scheduler.tick_campaign(state, view.id, join=False)
    async with db.snapshot() as s:
        assert set(await campaign_runs.load_runs(s, view.id)) == {"CP-00", "CP-01"}
    await campaign_scheduler.tick_campaign(state, view.id)
    async with db.snapshot() as s:
        runs = {sid: r for sid, (_, r) in (await campaign_runs.load_runs(s, view.id)).items()}
        joined = await s.get(Station, "CP-NEW")
        assert joined is not None and joined.campaign_id == view.id
    assert set(runs) == {"CP-00", "CP-01", "CP-NEW"}  # the other model stays out
    assert runs["CP-NEW"].stage == len(view.stages) - 1


async def test_a_batch_of_station_reports_reads_up_front_and_writes_together(
    db: Database, tmp_path: Path, pki: Pki
) -> None:
    """Reports of 20 stations in a campaign, sent at once through the group commit: every run,
    update, status row and audit entry lands as if written one by one, while the statements
    per batch stay a handful instead of a dozen per report (the prefetch and the queued
    appends; figures in benchmarks/bench_campaign.py)."""
    import asyncio

    from sqlalchemy import event, func, select

    from chargeward.audit.tables import AuditEntry
    from chargeward.server.stations.sink import DbSink
    from chargeward.server.store.tables import FirmwareStatusEvent

    release = await _release(db, tmp_path, pki, "1.1.0", "feature")
    ids = await _fleet(db, 20)
    spec = parse_spec(_spec(release))  # both stages started below, by hand
    async with db.session() as s:
        view = await campaigns.create_campaign(s, spec, actor="alice", now=NOW)
        policy = campaign_runs.to_planner(await campaigns.get_campaign(s, view.id)).policy
        requests: dict[str, int] = {}
        for sid, (row, run) in (await campaign_runs.load_runs(s, view.id)).items():
            order = await update_orders.create_update(
                s, sid, release, actor="campaign:c1", now=NOW, require_published=False
            )
            waiting = machine.step(run, machine.StageStarted(NOW), policy)
            sent = machine.step(waiting, machine.Dispatched(NOW, order.request_id), policy)
            campaign_runs.store_run(row, sent, NOW)
            requests[sid] = order.request_id
    async with db.snapshot() as s:
        audit_before = int(await s.scalar(select(func.count()).select_from(AuditEntry)) or 0)

    statements: list[str] = []
    engine = db.engine.sync_engine

    def counter(*args: object) -> None:
        statements.append(str(args[2]).split()[0])

    event.listen(engine, "before_cursor_execute", counter)
    sink = DbSink(db, clock=lambda: NOW)

    async def report(sid: str) -> None:
        await sink.update_response(sid, requests[sid], "Accepted")
        for status in ("Downloading", "Downloaded", "SignatureVerified", "Installing"):
            await sink.firmware_status(sid, status, requests[sid])

    try:
        await asyncio.gather(*(report(sid) for sid in ids))
        await sink.close()
    finally:
        event.remove(engine, "before_cursor_execute", counter)

    writes, batches = sink.writes.writes, sink.writes.batches
    assert writes == 5 * len(ids)
    await settle(db.session)  # station reports audit through the queue (PostgreSQL)
    async with db.snapshot() as s:
        runs = await campaign_runs.load_runs(s, view.id)
        assert {sid: (r.state, r.request_id) for sid, (_, r) in runs.items()} == {
            sid: ("installing", requests[sid]) for sid in ids
        }
        updates = (await s.scalars(select(FirmwareUpdate))).all()
        assert {u.station_id: (u.response_status, u.last_status) for u in updates} == {
            sid: ("Accepted", "Installing") for sid in ids
        }
        events = await s.scalars(select(FirmwareStatusEvent).order_by(FirmwareStatusEvent.id))
        mine = [(e.station_id, e.status) for e in events.all() if e.station_id == ids[0]]
        assert [st for _, st in mine] == [
            "Downloading", "Downloaded", "SignatureVerified", "Installing"
        ]  # fmt: skip
        trail = await audit.entries(s, limit=10_000)
    # Per report: its own entry; per run that changed state: one more (dispatched ->
    # downloading, downloading -> installing).
    assert len(trail) - audit_before == 5 * len(ids) + 2 * len(ids)
    moved = [e for e in trail if e.action == "campaign.station" and e.target.endswith(str(view.id))]
    assert {(e.details["from"], e.details["to"]) for e in moved} >= {
        ("dispatched", "downloading"), ("downloading", "installing")
    }  # fmt: skip
    # Read up front, written together: a bounded number of statements per transaction,
    # whatever the number of reports in it (a dozen per report before).
    per_batch = (len(statements) - statements.count("BEGIN")) / batches
    assert batches < writes / 2, (batches, writes)
    assert per_batch <= 16, (per_batch, sorted(set(statements)))


async def test_boots_after_our_update_in_one_batch_move_the_expected_version_not_drift(
    db: Database, tmp_path: Path, pki: Pki
) -> None:
    """A batch of boots after an update Chargeward sent: the pending update (read up front with
    the version it brings) explains the new version, so no drift alert; a station that boots
    a version nobody sent in the same batch raises one."""
    import asyncio

    from sqlalchemy import select

    from chargeward.ocpp.csms import BootInfo
    from chargeward.server.stations.sink import DbSink
    from chargeward.server.store.tables import Alert

    def boot(version: str) -> BootInfo:
        return BootInfo(reason="FirmwareUpdate", model=MODEL, vendor="ACME",
                        firmware_version=version, serial_number=None)  # fmt: skip

    release = await _release(db, tmp_path, pki, "1.1.0", "feature")
    ids = await _fleet(db, 12)
    first = DbSink(db, clock=lambda: NOW)
    await asyncio.gather(
        *(first.boot(sid, replace(boot("1.0.0"), reason="PowerUp")) for sid in ids)
    )
    await first.close()  # 1.0.0 is now what each should run
    async with db.session() as s:
        for sid in ids[:-1]:
            await update_orders.create_update(
                s, sid, release, actor="alice", now=NOW, require_published=False
            )
    sink = DbSink(db, clock=lambda: NOW)
    await asyncio.gather(
        *(sink.boot(sid, boot("1.1.0")) for sid in ids[:-1]), sink.boot(ids[-1], boot("6.6.6"))
    )
    await sink.close()
    assert sink.writes.batches < len(ids)
    await settle(db.session)  # station reports audit through the queue (PostgreSQL)
    async with db.snapshot() as s:
        stations = (await s.scalars(select(Station).where(Station.id.in_(ids)))).all()
        expected = {st.id: st.expected_firmware for st in stations}
        drift = (await s.scalars(select(Alert).where(Alert.kind == "firmware_drift"))).all()
        drifting = [a.station_id for a in drift]
        moved = await audit.entries(s, limit=10_000)
    assert drifting == [ids[-1]]
    main = next(iter(expected[ids[0]]))
    assert {sid: expected[sid][main] for sid in ids} == {
        **{sid: "1.1.0" for sid in ids[:-1]}, ids[-1]: "1.0.0"
    }  # fmt: skip
    explained = [e for e in moved if e.action == "station.expected_firmware"]
    assert len(explained) == len(ids) - 1 and all(e.transaction_id for e in explained)


async def test_a_canary_that_fails_while_the_scheduler_reads_never_lets_its_stage_pass(
    db: Database, tmp_path: Path, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo's bad release once reached 11 more stations: the scheduler read the finished
    runs, then the canary's rollback committed, then it read the unfinished ones, so the
    canary was in neither and its stage passed with nobody in it.  The tick now reads and
    writes one consistent state (``Database.serialized``): the rollback lands before or after
    the whole tick, never between its queries."""
    release = await _release(db, tmp_path, pki, "1.1.0", "feature")
    ids = await _fleet(db, 5)
    async with db.session() as s:
        view = await campaigns.create_campaign(
            s, parse_spec(_spec(release, gates={"success": "90%", "error": "10%"})),
            actor="alice", now=NOW,
        )  # fmt: skip
        runs = await campaign_runs.load_runs(s, view.id)
        row, run = next(v for v in runs.values() if v[1].stage == 0)
        campaign_runs.store_run(row, replace(run, state="rebooting", request_id=1), NOW)
        canary = run.station_id
    state = ServerState(tmp_path, db, BlobStore(tmp_path / "blobs"), b"k" * 32, "http://x")
    state.clock = lambda: NOW
    async with db.session() as s:
        for sid in ids:
            station = await s.get(Station, sid)
            assert station is not None
            station.connected = True

    async def roll_back() -> None:  # the canary's boot, reported on another connection
        async with db.session() as s:
            runs = await campaign_runs.load_runs(s, view.id)
            row, run = runs[canary]
            campaign_runs.store_run(
                row, replace(run, state="rolled_back", reason="rolled back"), NOW
            )

    landed: list[asyncio.Task[None]] = []
    original = campaign_runs.load_for_planning

    async def between_the_queries(s: AsyncSession, campaign_id: int) -> object:
        first = s.execute

        async def execute(*a: object, **kw: object) -> object:
            out = await first(*a, **kw)  # the finished runs: the canary is not among them
            s.execute = first  # type: ignore[method-assign]
            landed.append(asyncio.create_task(roll_back()))
            # Unserialized, the rollback commits now; serialized, it waits for the tick.
            await asyncio.wait(landed, timeout=2.0)
            return out

        s.execute = execute  # type: ignore[method-assign]
        return await original(s, campaign_id)

    monkeypatch.setattr(campaign_runs, "load_for_planning", between_the_queries)
    orders = await campaign_scheduler.tick_campaign(state, view.id, join=False)
    monkeypatch.setattr(campaign_runs, "load_for_planning", original)
    await asyncio.wait_for(landed[0], 30)
    assert orders == []  # stage 1 did not start: nothing sent beyond the canary
    await campaign_scheduler.tick_campaign(state, view.id, join=False)
    async with db.snapshot() as s:
        stored = await campaigns.get_campaign(s, view.id)
        assert stored.status == "paused" and stored.stage == 0, stored.pause_reason
        trail = [
            e.details.get("note") for e in await audit.entries(s, target=f"campaign:{view.id}")
        ]
    assert "stage 1 started" not in trail
