"""Every PostgreSQL session is bounded (ADR 0031, amended): a node that stops inside a
transaction holding the audit head cannot stall the other writers, a waiter gives up instead
of queueing, and the bounds :class:`DatabaseTimeouts` names reach the server.

The holder below is a connection of the server's own pool that takes the audit head row lock
and then does nothing, as a node paused by SIGSTOP after ``INSERT INTO audit_nodes`` would.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from chargeward import audit
from chargeward.server.store.db import (
    MIGRATION_LOCK,
    Database,
    DatabaseTimeouts,
    lost_to_concurrent,
    unavailable,
)
from tests.support.api_app import running_api
from tests.support.campaigns import until
from tests.support.contention import (
    NOW,
    WAIT,
    as_async,
    assert_busy,
    campaign_doc_for,
    release_and_fleet,
)
from tests.support.databases import postgres_database
from tests.support.fleet import Pki

POSTGRESQL = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


async def _hold_audit_head(conn: AsyncConnection) -> None:
    """Take the audit head's row lock in an open transaction, then go idle."""
    await conn.begin()
    await conn.execute(text("UPDATE audit_tree_head SET size = size WHERE id = 1"))


async def _audited_write(s: AsyncSession) -> None:
    await audit.record(s, actor="CP-00", action="station.boot", target="CP-00", now=NOW)


@POSTGRESQL
async def test_an_idle_transaction_holding_the_audit_head_is_ended_and_writers_go_on(
    database_url: str, tmp_path: Path
) -> None:
    """The holder stays idle in its transaction; the server ends its session after the idle
    timeout (1 s here), and the audited write queued behind the audit head commits."""
    timeouts = DatabaseTimeouts(idle_in_transaction=1, lock=0, statement=0)
    db = await Database.open(data_dir=tmp_path, url=database_url, timeouts=timeouts)
    try:
        holder = await db.engine.connect()
        await _hold_audit_head(holder)
        writing = asyncio.create_task(db.write(_audited_write))
        async with asyncio.timeout(WAIT / 2):  # idle timeout plus the write itself
            await writing
        assert db.retried == 0  # it waited for the lock and got it: nothing to run again
        with pytest.raises(DBAPIError):  # the holder's session is gone
            await holder.execute(text("SELECT 1"))
        with contextlib.suppress(DBAPIError):
            await holder.close()
        async with db.snapshot() as s:
            assert [e.action for e in await audit.entries(s)] == ["station.boot"]
    finally:
        await db.close()


@POSTGRESQL
async def test_an_api_write_behind_a_held_lock_answers_503_then_passes_once_it_is_freed(
    database_url: str, tmp_path: Path, pki: Pki
) -> None:
    """No idle bound, a 0.3 s lock timeout: the POST's lock wait gives up (SQLSTATE 55P03) and
    is retried; with its attempts spent it answers 503 with Retry-After instead of hanging,
    and with attempts left it passes (201) once the holder lets go."""
    timeouts = DatabaseTimeouts(idle_in_transaction=0, lock=0.3, statement=0)
    db = await Database.open(data_dir=tmp_path, url=database_url, timeouts=timeouts)
    release = await release_and_fleet(db, tmp_path, pki)
    async with running_api(tmp_path, NOW, db=db) as api:
        async with db.engine.connect() as holder:
            await _hold_audit_head(holder)
            db.write_attempts = 2
            async with asyncio.timeout(WAIT):
                assert_busy(
                    await api.client.post("/api/v1/campaigns", json=campaign_doc_for(release))
                )
            assert db.retried == 1
            db.write_attempts = 1000
            posting = asyncio.create_task(
                api.client.post("/api/v1/campaigns", json=campaign_doc_for(release))
            )
            retried = db.retried
            await until(as_async(lambda: db.retried > retried), "the POST is retried", WAIT)
            await holder.rollback()
        async with asyncio.timeout(WAIT):
            r = await posting
        assert r.status_code == 201, r.text


@POSTGRESQL
async def test_a_statement_past_its_timeout_is_busy_not_a_fault(
    database_url: str, tmp_path: Path
) -> None:
    """A statement cancelled by ``statement_timeout`` (SQLSTATE 57014) is answered as a busy
    database (503 with Retry-After), and not run again."""
    timeouts = DatabaseTimeouts(idle_in_transaction=0, lock=0, statement=0.2)
    db = await Database.open(data_dir=tmp_path, url=database_url, timeouts=timeouts)
    try:
        with pytest.raises(DBAPIError) as caught:
            async with asyncio.timeout(WAIT), db.session() as s:
                await s.execute(text("SELECT pg_sleep(5)"))
        assert unavailable(caught.value) == "the database is busy (statement timed out)"
        assert lost_to_concurrent(caught.value) is None
    finally:
        await db.close()


@POSTGRESQL
async def test_the_bounds_reach_every_session(database_url: str, tmp_path: Path) -> None:
    """``SHOW`` on a session of :meth:`Database.open` gives the configured values, and the
    client end of its socket sends keepalives."""
    timeouts = DatabaseTimeouts(
        idle_in_transaction=1.5,
        lock=2,
        statement=3,
        keepalives_idle=7,
        keepalives_interval=4,
        keepalives_count=5,
    )
    db = await Database.open(data_dir=tmp_path, url=database_url, timeouts=timeouts)
    try:
        async with db.engine.connect() as conn:
            shown = {
                name: await conn.scalar(text(f"SHOW {name}"))
                for name in (
                    "idle_in_transaction_session_timeout",
                    "lock_timeout",
                    "statement_timeout",
                    "tcp_keepalives_idle",
                    "tcp_keepalives_interval",
                    "tcp_keepalives_count",
                )
            }
            raw = await conn.get_raw_connection()
            sock = raw.driver_connection._transport.get_extra_info("socket")  # type: ignore[union-attr]
            keepalive = sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
            idle = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE)
        assert shown == {
            "idle_in_transaction_session_timeout": "1500ms",
            "lock_timeout": "2s",
            "statement_timeout": "3s",
            "tcp_keepalives_idle": "7",
            "tcp_keepalives_interval": "4",
            "tcp_keepalives_count": "5",
        }
        assert keepalive and idle == 7
    finally:
        await db.close()
    default = await Database.open(data_dir=tmp_path, url=database_url)
    try:
        async with default.engine.connect() as conn:
            assert await conn.scalar(text("SHOW idle_in_transaction_session_timeout")) == "30s"
            assert await conn.scalar(text("SHOW lock_timeout")) == "10s"
            assert await conn.scalar(text("SHOW statement_timeout")) == "1min"
    finally:
        await default.close()


async def test_migrations_wait_for_one_another_without_the_bounds(tmp_path: Path) -> None:
    """A server opening a new database while another holds the migration lock waits for it
    past its 50 ms lock and statement bounds (the migrating transaction lifts them), and
    migrates once the lock is free."""
    with postgres_database() as url:
        other = await asyncpg.connect(url.replace("+asyncpg", "", 1))
        try:
            await other.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
            bounded = DatabaseTimeouts(lock=0.05, statement=0.05)
            opening = asyncio.create_task(
                Database.open(data_dir=tmp_path, url=url, timeouts=bounded)
            )

            async def waited_past_the_bounds() -> bool:
                if opening.done():
                    return True  # gave up: awaiting it below raises why
                found = await other.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'advisory' "
                    "AND clock_timestamp() - query_start > interval '200 milliseconds'"
                )
                return bool(found)

            await until(waited_past_the_bounds, "the migration waits for the lock", WAIT)
            await other.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
            async with asyncio.timeout(WAIT):
                db = await opening
        finally:
            await other.close()
        try:
            async with db.engine.connect() as conn:
                assert await conn.scalar(text("SELECT count(*) FROM audit_tree_head")) == 1
        finally:
            await db.close()
