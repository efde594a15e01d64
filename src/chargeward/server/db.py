"""Database connection: SQLite (WAL) in the data directory by default, PostgreSQL by URL.

    >>> db = await Database.open(data_dir=Path("chargeward-data"))  # doctest: +SKIP
    >>> async with db.session() as s: ...                              # doctest: +SKIP

The schema is brought to the newest Alembic revision when the database is opened.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, event
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from chargeward.errors import ConfigError

DATABASE_URL_ENV = "CHARGEWARD_DATABASE_URL"
MIGRATIONS = Path(__file__).parent / "migrations"


def database_url(data_dir: Path) -> str:
    url = os.environ.get(DATABASE_URL_ENV)
    if url:
        if url.startswith("postgresql://"):
            url = "postgresql+asyncpg://" + url[len("postgresql://") :]
        return url
    return f"sqlite+aiosqlite:///{(data_dir / 'chargeward.db').resolve()}"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def _upgrade(connection: Connection) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, "head")


class Database:
    """An engine plus a session factory."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)

    @classmethod
    async def open(cls, *, data_dir: Path, url: str | None = None) -> Database:
        url = url or database_url(data_dir)
        if url.startswith("sqlite"):
            data_dir.mkdir(parents=True, exist_ok=True)
        try:
            engine = create_async_engine(url, pool_pre_ping=not url.startswith("sqlite"))
        except Exception as e:  # invalid URL, missing driver
            raise ConfigError(f"cannot use database URL: {e}") from e
        if url.startswith("sqlite"):
            event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        try:
            async with engine.begin() as conn:
                await conn.run_sync(_upgrade)
        except OSError as e:
            raise ConfigError(f"cannot open database: {e}") from e
        return cls(engine)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session in a transaction: committed on success, rolled back on error."""
        async with self._sessions() as s, s.begin():
            yield s

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[AsyncSession]:
        """A read-only session whose queries all see one consistent state of the database.

        Plain sessions read each statement at its own moment (pysqlite opens a transaction
        only before a write; PostgreSQL defaults to READ COMMITTED), so a view assembled from
        several queries could mix before and after a concurrent commit.
        """
        async with self._sessions() as s:
            if self.engine.dialect.name == "sqlite":
                conn = await s.connection()
                await conn.exec_driver_sql("BEGIN")  # a deferred read transaction: one snapshot
            else:
                await s.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            try:
                yield s
            finally:
                await s.rollback()

    async def close(self) -> None:
        await self.engine.dispose()
