"""Group commit (server.group_commit) on SQLite and PostgreSQL: many station writes share one
transaction, each caller learns only its own outcome, and nothing is answered before it is
committed."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from chargeward.audit import sequencer
from chargeward.audit.tables import AuditEntry
from chargeward.errors import NotFound
from chargeward.ocpp.csms import BootInfo
from chargeward.server.fleet import station_registry
from chargeward.server.stations.group_commit import GroupCommit
from chargeward.server.stations.sink import DbSink
from chargeward.server.store.db import Database
from chargeward.server.store.tables import BootEvent, Station

NOW = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC)
BOOT = BootInfo(
    reason="PowerUp", model="AC22", vendor="ACME", firmware_version="1.0.0", serial_number=None
)


def connect(station_id: str) -> Callable[[AsyncSession], Awaitable[bool]]:
    """The write that records ``station_id`` as connected."""
    return lambda s: station_registry.set_connected(s, station_id, True, now=NOW)


async def _register(db: Database, ids: list[str]) -> None:
    async with db.session() as s:
        for sid in ids:
            await station_registry.register_station(s, sid, actor="alice", now=NOW)


async def _count(db: Database, table: type) -> int:
    async with db.snapshot() as s:
        return int((await s.scalar(select(func.count()).select_from(table))) or 0)


async def test_a_storm_of_boots_shares_few_transactions_and_every_write_lands(
    db: Database,
) -> None:
    ids = [f"CP-{i:03d}" for i in range(120)]
    await _register(db, ids)
    audit_before = await _count(db, AuditEntry)
    sink = DbSink(db, clock=lambda: NOW)

    async def station(sid: str) -> bool:
        booted_before = await sink.connected(sid, True)
        await sink.boot(sid, BOOT)
        return booted_before

    booted_before = await asyncio.gather(*(station(sid) for sid in ids))
    await sink.close()

    assert booted_before == [False] * len(ids)  # none had booted before this storm
    # 240 writes; batches form while one commits, so far fewer transactions than writes.
    assert sink.writes.writes == 2 * len(ids)
    assert sink.writes.batches < len(ids) / 4
    async with db.snapshot() as s:
        rows = (await s.scalars(select(Station).where(Station.id.in_(ids)))).all()
        stored = {r.id: (r.connected, r.firmware_version, r.last_boot_reason) for r in rows}
        boots = await s.scalar(select(func.count()).select_from(BootEvent))
    assert stored == {sid: (True, "1.0.0", "PowerUp") for sid in ids}
    assert boots == len(ids)
    await sequencer.settle(db.session)  # PostgreSQL: the reports' entries were queued
    assert await _count(db, AuditEntry) == audit_before + 2 * len(ids)  # connect + boot each


async def test_a_failing_write_fails_alone_and_its_neighbours_commit(db: Database) -> None:
    await _register(db, ["CP-1", "CP-2"])
    writes = GroupCommit(db)
    results = await asyncio.gather(
        writes.run(connect("CP-1"), station_id="CP-1"),
        writes.run(connect("NO-SUCH-STATION"), station_id="NO-SUCH-STATION"),
        writes.run(connect("CP-2"), station_id="CP-2"),
        return_exceptions=True,
    )
    await writes.close()

    assert results[0] is False and results[2] is False
    assert isinstance(results[1], NotFound) and "NO-SUCH-STATION" in str(results[1])
    async with db.snapshot() as s:
        connected = {
            sid: (await s.get(Station, sid)).connected  # type: ignore[union-attr]
            for sid in ("CP-1", "CP-2")
        }
    assert connected == {"CP-1": True, "CP-2": True}


async def test_a_caller_is_answered_only_after_its_write_is_committed(db: Database) -> None:
    await _register(db, ["CP-1"])
    writes = GroupCommit(db)
    seen_in_other_session: list[bool] = []

    async def write(s: AsyncSession) -> str:
        row = await s.get(Station, "CP-1")
        assert row is not None
        row.connected = True
        async with db.snapshot() as other:  # not committed yet: another session cannot see it
            seen_in_other_session.append(
                bool((await other.get(Station, "CP-1")).connected)  # type: ignore[union-attr]
            )
        return "done"

    assert await writes.run(write, station_id="CP-1") == "done"
    async with db.snapshot() as s:  # once answered, it is there for everyone
        assert (await s.get(Station, "CP-1")).connected  # type: ignore[union-attr]
    await writes.close()
    assert seen_in_other_session == [False]


async def test_close_commits_what_is_queued(db: Database) -> None:
    await _register(db, ["CP-1"])
    writes = GroupCommit(db)
    pending = asyncio.ensure_future(writes.run(connect("CP-1"), station_id="CP-1"))
    await asyncio.sleep(0)  # queued, not yet committed
    await writes.close()
    assert pending.done() and pending.result() is False
    async with db.snapshot() as s:
        assert (await s.get(Station, "CP-1")).connected  # type: ignore[union-attr]


@pytest.mark.parametrize("batch", [1, 7])
async def test_batches_never_exceed_their_cap(db: Database, batch: int) -> None:
    ids = [f"CP-{i}" for i in range(20)]
    await _register(db, ids)
    writes = GroupCommit(db, max_batch=batch)
    sizes: list[int] = []
    run_together = writes._run_together

    async def spy(queued):  # type: ignore[no-untyped-def]
        sizes.append(len(queued))
        return await run_together(queued)

    writes._run_together = spy  # type: ignore[method-assign]
    await asyncio.gather(*(writes.run(connect(sid), station_id=sid) for sid in ids))
    await writes.close()
    assert sum(sizes) == len(ids) and max(sizes) <= batch


async def test_drift_alerts_found_from_the_batch_prefetch_are_neither_lost_nor_doubled(
    db: Database,
) -> None:
    """Unresolved alerts are read for the whole batch up front; an alert raised by one boot is
    seen by the next boot of the same station in the same batch (counted, not raised again)."""
    from chargeward.server.store.tables import Alert

    ids = [f"CP-{i:02d}" for i in range(30)]
    await _register(db, ids)
    sink = DbSink(db, clock=lambda: NOW)
    await asyncio.gather(*(sink.boot(sid, BOOT) for sid in ids))  # 1.0.0 becomes expected
    odd = BootInfo(reason="PowerUp", model="AC22", vendor="ACME", firmware_version="6.6.6",
                   serial_number=None)  # fmt: skip
    # Two boots per station with firmware no update explains, all queued at once.
    await asyncio.gather(*(sink.boot(sid, odd) for sid in ids for _ in range(2)))
    await sink.close()
    assert sink.writes.batches < sink.writes.writes / 2  # they did share transactions
    async with db.snapshot() as s:
        rows = (await s.scalars(select(Alert).where(Alert.kind == "firmware_drift"))).all()
        found = sorted((a.station_id, a.state, a.count) for a in rows)
    assert found == [(sid, "open", 2) for sid in ids]


@pytest.mark.parametrize("delay", [0.0, 0.2])
async def test_writes_arriving_one_by_one_share_a_batch_within_the_gather_delay(
    db: Database, delay: float
) -> None:
    """Reports that trickle in (one every few milliseconds, as in a rollout) would each pay a
    transaction; the gather delay lets those of one instant share it."""
    ids = [f"CP-{i}" for i in range(6)]
    await _register(db, ids)
    writes = GroupCommit(db, gather_delay=delay)

    async def trickle() -> None:
        pending = []
        for sid in ids:
            pending.append(asyncio.create_task(writes.run(connect(sid), station_id=sid)))
            await asyncio.sleep(0.01)  # the previous write's batch has started by now
        await asyncio.gather(*pending)

    await trickle()
    await writes.close()
    assert writes.writes == len(ids)
    if delay:
        assert writes.batches == 1
    else:
        assert writes.batches > 1
