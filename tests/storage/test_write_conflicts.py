"""Writes that lose to concurrent ones (ADR 0031): one lock order, retried API writes, and 503
with Retry-After instead of 500 when the database cannot take a request.

The PostgreSQL tests make the conflicts for real: a deadlock between a campaign POST and a
transaction taking the audit head before a station row (the order that deadlocked before), a
serialization failure of a REPEATABLE READ write, a pool with its only connection held.  SQLite
meets "database is locked" from a second connection holding the write lock.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from chargeward import audit
from chargeward.audit.tables import AuditEntry
from chargeward.server.fleet import station_registry
from chargeward.server.store.db import Database
from chargeward.server.store.tables import Campaign, Station
from chargeward.storage.appends import write_queued
from tests.support.api_app import running_api
from tests.support.campaigns import until
from tests.support.contention import (
    NOW,
    WAIT,
    as_async,
    assert_busy,
    campaign_doc_for,
    release_and_fleet,
    waiting_on_a_lock,
)
from tests.support.fleet import MODEL, Pki


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_transaction_holds_no_audit_head_lock_until_it_commits(db: Database) -> None:
    """An audit entry queued before a query is not written by it: the head row stays free."""
    async with db.session() as s:
        await audit.record(s, actor="CP-00", action="station.boot", target="CP-00", now=NOW)
        await s.execute(select(Station.id))  # a later query: it once wrote the entry here
        async with db.engine.connect() as other:
            free = await other.scalar(
                text("SELECT size FROM audit_tree_head WHERE id = 1 FOR UPDATE NOWAIT")
            )
            await other.rollback()
        assert free is not None
    async with db.snapshot() as s:
        assert [e.action for e in await audit.entries(s)] == ["station.boot"]


async def test_a_commit_writes_its_row_changes_before_the_audit_head(db: Database) -> None:
    """At commit the ORM's pending changes reach the database first and the audit head last,
    while a query of the audit log in the same transaction still sees its own entries."""
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(" ".join(statement.split()[:2]).lower())

    event.listen(db.engine.sync_engine, "before_cursor_execute", seen)
    async with db.session() as s:
        await station_registry.register_station(s, "CP-00", actor="alice", model=MODEL, now=NOW)
    async with db.session() as s:
        station = await s.get(Station, "CP-00")
        assert station is not None
        await audit.record(s, actor="CP-00", action="station.boot", target="CP-00", now=NOW)
        station.vendor = "Acme"  # pending until the commit's flush
        statements.clear()
    event.remove(db.engine.sync_engine, "before_cursor_execute", seen)
    assert statements.index("update stations") < statements.index("update audit_tree_head")
    async with db.session() as s:
        await audit.record(s, actor="CP-00", action="station.status", target="CP-00", now=NOW)
        assert [e.action for e in await audit.entries(s)][-1] == "station.status"


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("attempts", [5, 1])
async def test_a_campaign_post_that_deadlocks_is_retried_and_both_writes_are_audited(
    database_url: str, tmp_path: Path, pki: Pki, attempts: int, caplog: pytest.LogCaptureFixture
) -> None:
    """A station report taking the audit head and then its station row (the order that once
    deadlocked) meets a campaign POST enrolling that station: PostgreSQL ends the POST's
    transaction with a deadlock; it runs again and answers 201.  Without retries (one
    attempt) it answers 503 with Retry-After, never 500."""
    db = await Database.open(data_dir=tmp_path, url=database_url)
    release = await release_and_fleet(db, tmp_path, pki)
    head_taken, go = asyncio.Event(), asyncio.Event()
    runs = 0

    async def report(s: AsyncSession) -> None:
        nonlocal runs
        runs += 1
        await audit.record(s, actor="CP-00", action="station.boot", target="CP-00", now=NOW)
        if runs == 1:  # the old order: the audit head first, then the station row
            await s.run_sync(write_queued)
            head_taken.set()
            await go.wait()
        await s.execute(update(Station).where(Station.id == "CP-00").values(vendor="Acme"))

    caplog.set_level(logging.INFO, logger="chargeward.db")
    async with running_api(tmp_path, NOW, db=db) as api:
        db.write_attempts = attempts
        reporting = asyncio.create_task(db.write(report))
        async with asyncio.timeout(WAIT):
            await head_taken.wait()
        posting = asyncio.create_task(
            api.client.post("/api/v1/campaigns", json=campaign_doc_for(release))
        )
        await until(lambda: waiting_on_a_lock(db), "the POST waits for the audit head", WAIT)
        go.set()  # the report now waits for the POST's station row: a deadlock
        async with asyncio.timeout(WAIT):
            r = await posting
            await reporting
        assert "deadlock" in caplog.text or attempts == 1
        async with db.snapshot() as s:
            station = (
                await s.execute(
                    select(Station.vendor, Station.campaign_id).where(Station.id == "CP-00")
                )
            ).first()
            campaigns = list(await s.scalars(select(Campaign.name)))
            actions = [e.action for e in await audit.entries(s)]
            indexes = list(await s.scalars(select(AuditEntry.leaf_index)))
        assert station is not None and station.vendor == "Acme"  # the report is stored
        assert sorted(indexes) == list(range(len(indexes)))
        if attempts == 1:
            assert_busy(r)
            assert campaigns == [] and "campaign.created" not in actions
            return
        assert r.status_code == 201, r.text
        assert db.retried >= 1
        assert campaigns == ["c1"] and station.campaign_id == r.json()["id"]
        assert actions.count("station.boot") == 1 and "campaign.created" in actions


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_serialization_failure_is_retried_on_fresh_state(db: Database) -> None:
    """A REPEATABLE READ write whose row another transaction changed after it read fails with
    SQLSTATE 40001; :meth:`Database.write` runs it again, reading the new value."""
    async with db.session() as s:
        await station_registry.register_station(s, "CP-00", actor="alice", model=MODEL, now=NOW)
    read_once = asyncio.Event()
    seen: list[str | None] = []

    async def rename(s: AsyncSession) -> None:
        vendor = await s.scalar(select(Station.vendor).where(Station.id == "CP-00"))
        seen.append(vendor)
        if len(seen) == 1:
            read_once.set()
            async with db.session() as other:  # commits between this read and the write
                await other.execute(
                    update(Station).where(Station.id == "CP-00").values(vendor="Other")
                )
        await s.execute(update(Station).where(Station.id == "CP-00").values(vendor=f"{vendor}+1"))

    await db.write(rename, serialized=True)
    assert db.retried == 1 and seen[1] == "Other"
    async with db.snapshot() as s:
        assert await s.scalar(select(Station.vendor).where(Station.id == "CP-00")) == "Other+1"


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_an_exhausted_pool_answers_503_with_retry_after(
    database_url: str, tmp_path: Path
) -> None:
    """One connection, no overflow, held by someone else: every route answers 503, not 500."""
    db = Database(create_async_engine(database_url, pool_size=1, max_overflow=0, pool_timeout=0.2))
    async with running_api(tmp_path, NOW, db=db) as api:
        async with db.engine.connect() as held:
            await held.execute(text("SELECT 1"))
            for method, path, body in (
                ("GET", "/api/v1/campaigns", None),
                ("POST", "/api/v1/campaigns", {"name": "c", "release": "r"}),
                ("GET", "/api/v1/audit", None),
            ):
                assert_busy(await api.client.request(method, path, json=body))
        r = await api.client.get("/api/v1/campaigns")
        assert r.status_code == 200, r.text


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_sqlite_database_is_locked_is_retried_then_answers_503(
    database_url: str, tmp_path: Path, pki: Pki
) -> None:
    """Another process holds SQLite's write lock past the busy timeout: the POST is retried
    while it holds it (503 with Retry-After once retries are spent) and passes once it lets go."""
    db = await Database.open(data_dir=tmp_path, url=database_url)

    @event.listens_for(db.engine.sync_engine, "connect")
    def _short_busy_timeout(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout=50")
        cursor.close()

    await db.engine.dispose()  # new connections, with the short timeout
    release = await release_and_fleet(db, tmp_path, pki)
    path = db.engine.url.database
    assert path is not None
    async with running_api(tmp_path, NOW, db=db) as api:
        db.write_attempts = 2
        holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            holder.execute("BEGIN IMMEDIATE")
            assert_busy(await api.client.post("/api/v1/campaigns", json=campaign_doc_for(release)))
            db.write_attempts = 1000
            posting = asyncio.create_task(
                api.client.post("/api/v1/campaigns", json=campaign_doc_for(release))
            )
            retried = db.retried
            await until(as_async(lambda: db.retried > retried), "the POST is retried", WAIT)
            holder.execute("ROLLBACK")
            async with asyncio.timeout(WAIT):
                r = await posting
        finally:
            holder.close()
        assert r.status_code == 201, r.text
