"""The audit table is append-only at the database level, and entries keep their order."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from chargeward import audit
from chargeward.server.store.db import Database

NOW = dt.datetime(2026, 11, 21, 12, 0, tzinfo=dt.UTC)


async def test_entries_append_and_cannot_be_rewritten(db: Database) -> None:
    """The database itself refuses, on SQLite and on PostgreSQL (triggers in migration 0001)."""
    tid = audit.new_transaction_id()
    async with db.session() as s:
        await audit.record(s, actor="alice", action="release.upload", target="r1", now=NOW)
        await audit.record(
            s,
            actor="station:CP-1",
            action="station.firmware_status",
            target="CP-1",
            transaction_id=tid,
            details={"status": "Installed"},
            now=NOW,
        )
    async with db.session() as s:
        rows = await audit.entries(s)
        assert [(r.actor, r.action) for r in rows] == [
            ("alice", "release.upload"),
            ("station:CP-1", "station.firmware_status"),
        ]
        assert [r.details for r in await audit.entries(s, transaction_id=tid)] == [
            {"status": "Installed"}
        ]
    for statement in ("UPDATE audit_entries SET actor='mallory'", "DELETE FROM audit_entries"):
        with pytest.raises(DBAPIError, match="append-only"):
            async with db.session() as s:
                await s.execute(text(statement))
    async with db.session() as s:
        assert [r.actor for r in await audit.entries(s)] == ["alice", "station:CP-1"]
