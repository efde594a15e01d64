"""Fixtures for the storage suite: an empty database on each backend, for the migrations."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from chargeward.server.store.db import Database
from tests.support.databases import PostgresTemplates, postgres_database, sqlite_url


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with no tables at all, on each backend."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path / "empty")
        return
    with postgres_database() as url:
        yield url


@pytest.fixture
async def pg(postgres_templates: PostgresTemplates, tmp_path: Path) -> AsyncIterator[Database]:
    """A migrated PostgreSQL database of its own (for tests of PostgreSQL's behaviour)."""
    with postgres_database(postgres_templates.template()) as url:
        db = await Database.open(data_dir=tmp_path, url=url)
        try:
            yield db
        finally:
            await db.close()
