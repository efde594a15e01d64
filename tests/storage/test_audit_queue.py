"""The audit queue (ADR 0033): station reports on PostgreSQL queue their audit entries instead
of taking the cluster-wide ``audit_tree_head`` row lock, and sequencers append them to the log.

The holder below is a connection that locks the head row (``SELECT ... FOR UPDATE``) and then
does nothing, as a node paused by SIGSTOP inside an audited transaction would.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from chargeward import audit
from chargeward.audit import log, sequencer
from chargeward.audit.checkpoint import parse_vkey
from chargeward.audit.tables import AuditEntry, AuditQueued
from chargeward.audit.verify import Export, ExportedEntry, Report, verify_export
from chargeward.crypto.ed25519 import MessageSigner, generate_ed25519_key
from chargeward.ocpp.csms import BootInfo
from chargeward.server.fleet import station_registry
from chargeward.server.stations import group_commit
from chargeward.server.stations.sink import DbSink
from chargeward.server.store.db import Database, DatabaseTimeouts
from tests.support.api_app import running_api
from tests.support.campaigns import until
from tests.support.contention import WAIT, as_async, waiting_on_a_lock

POSTGRESQL = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
NOW = dt.datetime(2026, 12, 7, 18, 0, 0, 123456, tzinfo=dt.UTC)
PASSPHRASE = b"correct horse battery staple"
ORIGIN = "chargeward.test/audit"
BOOT = BootInfo(
    reason="PowerUp", model="AC22", vendor="ACME", firmware_version="1.0.0", serial_number=None
)
UNBOUNDED = DatabaseTimeouts(idle_in_transaction=0, lock=0, statement=0)  # a holder stays put
REPORT_DEADLINE = 1.0  # seconds a batch of station reports may take with the head held
STATIONS = [f"CP-{i:02d}" for i in range(20)]


@pytest.fixture
async def unbounded_db(database_url: str, tmp_path: Path) -> AsyncIterator[Database]:
    """The test database with no lock or idle bound: a lock wait lasts as long as the holder."""
    db = await Database.open(data_dir=tmp_path / "sqlite", url=database_url, timeouts=UNBOUNDED)
    try:
        yield db
    finally:
        await db.close()


@pytest.fixture
def signer(tmp_path: Path) -> MessageSigner:
    return generate_ed25519_key(f"file:{tmp_path / 'checkpoint.key'}", lambda: PASSPHRASE)


async def _hold_audit_head(conn: AsyncConnection) -> None:
    """Lock the audit head row in an open transaction, then go idle (a paused node)."""
    await conn.begin()
    await conn.execute(text("SELECT size FROM audit_tree_head WHERE id = 1 FOR UPDATE"))


async def _register(db: Database, ids: list[str]) -> None:
    async with db.session() as s:
        for sid in ids:
            await station_registry.register_station(s, sid, actor="alice", now=NOW)


async def _emptied(db: Database) -> bool:
    return await _count(db, AuditQueued) == 0


async def _count(db: Database, table: type) -> int:
    async with db.session() as s:
        return int(await s.scalar(select(func.count()).select_from(table)) or 0)


async def _reports(sink: DbSink, ids: list[str]) -> None:
    """A BootNotification and a FirmwareStatusNotification from each station, at once."""
    await asyncio.gather(
        *(sink.boot(sid, BOOT) for sid in ids),
        *(sink.firmware_status(sid, "Idle", None) for sid in ids),
    )


async def _verified(db: Database, signer: MessageSigner) -> tuple[Report, list[audit.Entry]]:
    """The whole log, verified by the offline verifier against a checkpoint signed now."""
    async with db.session() as s:
        await log.sign_checkpoint(s, signer, origin=ORIGIN, now=NOW, force=True)
    async with db.snapshot() as s:
        rows = await audit.entries(s, limit=100_000)
        notes = [c.note for c in await log.checkpoints(s)]
    fields = ("id", "leaf_index", "time", "actor", "action", "target", "transaction_id")
    exported = [
        ExportedEntry(
            **{f: getattr(r, f) for f in fields}, details=r.details, leaf_hash=r.leaf_hash
        )
        for r in rows
    ]
    export = Export(checkpoints=notes, entries=exported)
    key = parse_vkey(log.vkey_of(signer, ORIGIN).vkey)
    return verify_export(export, key, origin=ORIGIN), rows


@POSTGRESQL
async def test_station_reports_commit_while_a_paused_node_holds_the_audit_head(
    unbounded_db: Database, signer: MessageSigner
) -> None:
    """The attack of issue 28: a node stops holding the audit head.  BootNotification and
    FirmwareStatusNotification batches through the real group commit still commit within a
    second (their entries queued); once the holder lets go, the sequencer appends them and the
    log verifies with every one in it."""
    db = unbounded_db
    await _register(db, STATIONS)
    logged = await _count(db, AuditEntry)
    sink = DbSink(db, clock=lambda: NOW)
    running = sequencer.Sequencer(db.session, interval=0.05)
    async with db.engine.connect() as holder:
        await _hold_audit_head(holder)
        task = asyncio.create_task(running.run())
        try:
            started = asyncio.get_running_loop().time()
            async with asyncio.timeout(REPORT_DEADLINE):
                await _reports(sink, STATIONS)
            took = asyncio.get_running_loop().time() - started
            assert await _count(db, AuditQueued) == 2 * len(STATIONS)
            rounds = running.rounds
            await until(as_async(lambda: running.rounds > rounds + 1), "two sequencer rounds", WAIT)
            assert running.appended == 0  # it skips a held head rather than waiting on it
            assert await sequencer.settle(db.session, wait=0.1) is False  # a reader gives up
            assert await _count(db, AuditEntry) == logged
            await holder.rollback()  # the paused node's session ends
            await until(
                as_async(lambda: running.appended == 2 * len(STATIONS)), "the queue appended", WAIT
            )
        finally:
            await holder.rollback()  # (again) so that a failure does not leave writers stuck
            await running.close(task)
            await sink.close()
    print(f"{2 * len(STATIONS)} station reports with the audit head held: {took * 1000:.0f} ms")
    assert await _count(db, AuditQueued) == 0
    report, rows = await _verified(db, signer)
    assert report.entries == logged + 2 * len(STATIONS)
    reported = [(r.action, r.target) for r in rows if r.actor.startswith("station:")]
    assert sorted(reported) == sorted(
        [("station.boot", sid) for sid in STATIONS]
        + [("station.firmware_status", sid) for sid in STATIONS]
    )
    assert all(r.time == NOW for r in rows if r.actor.startswith("station:"))  # report time


@POSTGRESQL
async def test_without_the_queue_a_held_audit_head_stops_station_reports(
    unbounded_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control: the same reports appending directly (the path before ADR 0033) wait on
    the holder's row lock until it lets go."""
    db = unbounded_db
    await _register(db, STATIONS[:2])
    monkeypatch.setattr(group_commit, "defer", lambda s: False)
    sink = DbSink(db, clock=lambda: NOW)
    try:
        async with db.engine.connect() as holder:
            await _hold_audit_head(holder)
            reporting = asyncio.create_task(_reports(sink, STATIONS[:2]))
            await until(lambda: waiting_on_a_lock(db), "the reports wait on a lock", WAIT)
            assert not reporting.done()
            await holder.rollback()
            async with asyncio.timeout(WAIT):
                await reporting
    finally:
        await sink.close()
    assert await _count(db, AuditQueued) == 0


@POSTGRESQL
async def test_concurrent_writers_and_two_sequencers_append_each_entry_once_in_order(
    database_url: str, tmp_path: Path, signer: MessageSigner
) -> None:
    """Eight writers queue entries (one to three a transaction) through two nodes' pools, an
    API-style writer appends directly, and both nodes' sequencers run: every entry is in the
    log exactly once, leaf indexes are consecutive, each writer's entries keep their order,
    the queue ends empty and the log verifies."""
    nodes = [await Database.open(data_dir=tmp_path / n, url=database_url) for n in ("a", "b")]
    seqs = [sequencer.Sequencer(db.session, interval=0.01, batch=7) for db in nodes]
    tasks = [asyncio.create_task(s.run()) for s in seqs]
    writers, transactions = 8, 15

    async def queued_writer(w: int) -> None:
        db = nodes[w % 2]
        for t in range(transactions):
            async with db.session() as s:
                assert sequencer.defer(s)
                for e in range(1 + (w + t) % 3):
                    await audit.record(
                        s, actor=f"station:W{w}", action="test.queued",
                        target=f"W{w}-{t}-{e}", details={"t": t}, now=NOW,
                    )  # fmt: skip

    async def direct_writer() -> None:
        for t in range(transactions):
            async with nodes[0].session() as s:
                await audit.record(s, actor="alice", action="test.direct", target=f"D-{t}", now=NOW)

    try:
        await asyncio.gather(*(queued_writer(w) for w in range(writers)), direct_writer())
        queued = sum(1 + (w + t) % 3 for w in range(writers) for t in range(transactions))
        expected = queued + transactions
        await until(lambda: _emptied(nodes[1]), "the sequencers have emptied the queue", WAIT)
    finally:
        for s, task in zip(seqs, tasks, strict=True):
            await s.close(task)
    try:
        assert await _count(nodes[0], AuditQueued) == 0
        report, rows = await _verified(nodes[0], signer)
    finally:
        for db in nodes:
            await db.close()
    assert report.entries == len(rows) == expected
    assert [r.leaf_index for r in rows] == list(range(len(rows)))
    targets = [r.target for r in rows]
    assert len(set(targets)) == len(targets)  # once each
    assert sum(s.appended for s in seqs) == queued
    for w in range(writers):
        mine = [r.target for r in rows if r.actor == f"station:W{w}"]
        order = [(t, e) for t in range(transactions) for e in range(1 + (w + t) % 3)]
        assert mine == [f"W{w}-{t}-{e}" for t, e in order]  # queue order kept


@POSTGRESQL
async def test_an_audit_read_right_after_a_station_report_sees_it(
    database_url: str, tmp_path: Path
) -> None:
    """No sequencer runs: the audit API settles the queue before it reads, so the boot just
    reported is in the entries and in the tree it serves."""
    db = await Database.open(data_dir=tmp_path, url=database_url)
    async with running_api(tmp_path, NOW, db=db) as api:
        await _register(db, ["CP-1"])
        sink = DbSink(db, clock=lambda: NOW)
        await sink.boot("CP-1", BOOT)
        await sink.close()
        assert await _count(db, AuditQueued) == 1
        entries = await api.call("GET", "/api/v1/audit", params={"target": "CP-1"})
        assert [e["action"] for e in entries] == ["station.register", "station.boot"]
        tree = await api.call("GET", "/api/v1/audit/tree")
        assert tree["size"] == entries[-1]["leaf_index"] + 1
        await sink.firmware_status("CP-1", "Idle", None)
        await sink.close()
        tree = await api.call("GET", "/api/v1/audit/tree")
        assert tree["size"] == entries[-1]["leaf_index"] + 2
        assert await _count(db, AuditQueued) == 0


@POSTGRESQL
async def test_a_queued_entry_is_never_edited_and_leaves_only_into_the_log(db: Database) -> None:
    """The database refuses to change a queued entry, to delete one outside an append, and to
    truncate the queue; the sequencer's delete, in the transaction that appends, passes."""
    async with db.session() as s:
        sequencer.defer(s)
        await audit.record(s, actor="station:CP-1", action="station.boot", target="CP-1", now=NOW)
    for statement in (
        "UPDATE audit_queue SET actor = 'mallory'",
        "DELETE FROM audit_queue",
        "TRUNCATE audit_queue",
    ):
        with pytest.raises(DBAPIError, match="only by being appended"):
            async with db.session() as s:
                await s.execute(text(statement))
    assert await sequencer.settle(db.session)
    assert await _count(db, AuditQueued) == 0
    assert await _count(db, AuditEntry) == 1


@SQLITE
async def test_sqlite_appends_station_reports_in_their_own_transaction(db: Database) -> None:
    """SQLite has one writer at a time: nothing is queued, the entries are in the log when the
    reports are committed, and settling has nothing to do."""
    await _register(db, STATIONS[:3])
    sink = DbSink(db, clock=lambda: NOW)
    await _reports(sink, STATIONS[:3])
    await sink.close()
    assert await _count(db, AuditQueued) == 0
    assert await _count(db, AuditEntry) == 3 + 6
    assert await sequencer.settle(db.session)
    async with db.session() as s:
        assert not sequencer.defer(s)
