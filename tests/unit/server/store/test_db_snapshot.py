"""Views built from several queries see one consistent state of the database."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from chargeward.server.auth import tokens
from chargeward.server.store.db import Database
from chargeward.server.store.tables import ApiToken

NOW = dt.datetime(2026, 11, 21, 12, 0, tzinfo=dt.UTC)


async def _count(s: AsyncSession) -> int:
    return int(await s.scalar(select(func.count()).select_from(ApiToken)) or 0)


async def test_snapshot_does_not_see_a_commit_made_while_it_reads(db: Database) -> None:
    """On SQLite and on PostgreSQL (REPEATABLE READ)."""
    async with db.snapshot() as reader:
        before = await _count(reader)
        async with db.session() as writer:
            await tokens.create_token(writer, "alice", actor="test", now=NOW)
        assert await _count(reader) == before  # same snapshot for the whole view
    async with db.snapshot() as reader:
        assert await _count(reader) == before + 1  # a new view sees the commit
    # A plain session reads each statement afresh: the reason snapshot() exists.
    async with db.session() as plain:
        first = await _count(plain)
        async with db.session() as writer:
            await tokens.create_token(writer, "bob", actor="test", now=NOW)
        assert await _count(plain) == first + 1
