"""The migrations build exactly the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text
from sqlalchemy.exc import DBAPIError

from chargeward.server.store.db import MIGRATIONS, Database
from chargeward.server.store.tables import SCHEMA


def _head() -> str:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    assert head is not None
    return head


def _drift(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "compare_server_default": False}
    )
    return list(compare_metadata(context, SCHEMA))


async def test_migrations_reach_head_without_drift(empty_database_url: str, tmp_path: Path) -> None:
    db = await Database.open(data_dir=tmp_path, url=empty_database_url)
    try:
        async with db.engine.connect() as conn:
            version = await conn.scalar(text("SELECT version_num FROM alembic_version"))
            tables = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
            drift = await conn.run_sync(_drift)
        assert version == _head()
        assert set(SCHEMA.tables) <= tables
        assert drift == [], f"models and migrations differ on {db.dialect}: {drift}"
    finally:
        await db.close()
    again = await Database.open(data_dir=tmp_path, url=empty_database_url)  # idempotent
    await again.close()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_truncate_of_the_audit_log_is_refused_on_postgresql(db: Database) -> None:
    # SQLite has no TRUNCATE; UPDATE and DELETE are refused on both
    # (tests/unit/audit/test_audit_log.py)
    with pytest.raises(DBAPIError, match="append-only"):
        async with db.session() as s:
            await s.execute(text("TRUNCATE audit_entries"))
