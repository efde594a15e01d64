"""Database connection: SQLite (WAL) in the data directory by default, PostgreSQL by URL.

    db = await Database.open(data_dir=Path("chargeward-data"))
    async with db.session() as s: ...

``CHARGEWARD_DATABASE_URL=postgresql://user:pass@host/db`` (or ``postgres://``) selects
PostgreSQL through asyncpg.  The schema is brought to the newest Alembic revision when the
database is opened; on PostgreSQL an advisory lock serialises this, so several server processes
may start at once against one database.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from chargeward.errors import ConfigError

DATABASE_URL_ENV = "CHARGEWARD_DATABASE_URL"
MIGRATIONS = Path(__file__).parent / "migrations"


MIGRATION_LOCK = 0x43570001  # pg_advisory_xact_lock key held while migrating
_DRIVERS = {
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
}


def normalize_url(url: str) -> str:
    """The SQLAlchemy async URL for ``url``; ConfigError for a scheme Chargeward cannot use."""
    scheme, sep, rest = url.strip().partition("://")
    driver = _DRIVERS.get(scheme.lower())
    if not sep or driver is None:
        raise ConfigError(
            f"{DATABASE_URL_ENV} must start with postgresql:// or sqlite:///, got {scheme!r}"
        )
    return f"{driver}://{rest}"


def database_url(data_dir: Path) -> str:
    url = os.environ.get(DATABASE_URL_ENV)
    if url:
        return normalize_url(url)
    return f"sqlite+aiosqlite:///{(data_dir / 'chargeward.db').resolve()}"


def safe_url(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparsable database URL>"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def _upgrade(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":  # one migrating process at a time
        connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK})
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
        url = normalize_url(url) if url else database_url(data_dir)
        sqlite = url.startswith("sqlite")
        if sqlite:
            data_dir.mkdir(parents=True, exist_ok=True)
        try:
            engine = create_async_engine(
                url,
                # PostgreSQL: drop connections the server closed; recycle before idle timeouts.
                pool_pre_ping=not sqlite,
                pool_recycle=-1 if sqlite else 1800,
            )
        except Exception as e:  # invalid URL, missing driver
            raise ConfigError(f"cannot use database URL {safe_url(url)}: {e}") from e
        if sqlite:
            event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        try:
            async with engine.begin() as conn:
                await conn.run_sync(_upgrade)
        except (OSError, SQLAlchemyError) as e:
            await engine.dispose()
            reason = getattr(e, "orig", None) or e
            raise ConfigError(f"cannot open database {safe_url(url)}: {reason}") from e
        return cls(engine)

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.engine.dialect.name

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session in a transaction: committed on success, rolled back on error."""
        async with self._sessions() as s, s.begin():
            yield s

    @asynccontextmanager
    async def serialized(self) -> AsyncIterator[AsyncSession]:
        """A session that reads one consistent state and writes on it, committed on success.

        For read-decide-write work over many rows (a campaign tick): a plain session reads
        each statement at its own moment, so a run that finished between two queries could be
        missing from both, and a write could overwrite a row changed since it was read.
        SQLite: ``BEGIN IMMEDIATE`` (other writers wait for this one, up to the busy timeout).
        PostgreSQL: REPEATABLE READ; a concurrent update of a row it writes fails it with a
        serialization error (the caller tries again later) instead of being overwritten.
        """
        async with self._sessions() as s:
            if self.engine.dialect.name == "sqlite":
                conn = await s.connection()
                await conn.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                await s.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            try:
                yield s
            except BaseException:
                await s.rollback()
                raise
            await s.commit()

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
