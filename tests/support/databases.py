"""Throwaway databases for tests, on SQLite and on PostgreSQL.

PostgreSQL comes from ``CHARGEWARD_TEST_POSTGRES_URL`` (default
``postgresql://postgres@127.0.0.1:5432/test``, trust auth).  Tests that ask for PostgreSQL fail,
never skip, when no server answers: the storage layer must be shown to work on both.

Each PostgreSQL test gets its own database ``cw_<random>``, copied from a template migrated once
per session (``CREATE DATABASE ... TEMPLATE`` takes milliseconds, migrating takes a second) and
dropped afterwards::

    with postgres_database() as url:    # postgresql+asyncpg://.../cw_1a2b3c..., migrated
        db = await Database.open(data_dir=tmp, url=url)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
from sqlalchemy.engine import make_url

from chargeward.server.store.db import Database

POSTGRES_URL_ENV = "CHARGEWARD_TEST_POSTGRES_URL"
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
CONNECT_TIMEOUT = 5.0


def admin_url() -> str:
    """The PostgreSQL URL (libpq form) of a database used to create and drop others."""
    return os.environ.get(POSTGRES_URL_ENV, DEFAULT_POSTGRES_URL)


def _with_database(url: str, name: str) -> str:
    u = make_url(url).set(drivername="postgresql", database=name)
    return u.render_as_string(hide_password=False)


def sqlalchemy_url(libpq_url: str) -> str:
    return "postgresql+asyncpg://" + libpq_url.split("://", 1)[1]


async def _admin(statements: list[str]) -> None:
    try:
        conn = await asyncpg.connect(admin_url(), timeout=CONNECT_TIMEOUT)
    except (OSError, asyncpg.PostgresError, TimeoutError) as e:
        pytest.fail(
            f"PostgreSQL tests need a server: cannot connect to {admin_url()} ({e}); "
            f"start one or set {POSTGRES_URL_ENV}",
            pytrace=False,
        )
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


def _run(coro: Coroutine[Any, Any, None]) -> None:
    """Run ``coro`` to completion in a thread of its own, away from the test's event loop."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, coro).result()


class PostgresTemplates:
    """One migrated template database per test session, created on first use."""

    def __init__(self) -> None:
        self.name: str | None = None

    def template(self) -> str:
        if self.name is None:
            name = f"cw_tmpl_{secrets.token_hex(6)}"
            _run(_admin([f'CREATE DATABASE "{name}"']))
            self.name = name  # dropped at session end even if migrating fails

            async def migrate() -> None:
                db = await Database.open(
                    data_dir=Path("."), url=sqlalchemy_url(_with_database(admin_url(), name))
                )
                await db.close()

            _run(migrate())
        return self.name

    def drop(self) -> None:
        if self.name is not None:
            _run(_admin([f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)']))
            self.name = None


@contextlib.contextmanager
def postgres_database(template: str | None = None) -> Iterator[str]:
    """A fresh database (migrated when copied from ``template``); its SQLAlchemy URL."""
    name = f"cw_{secrets.token_hex(8)}"
    copy = f' TEMPLATE "{template}"' if template else ""
    _run(_admin([f'CREATE DATABASE "{name}"{copy}']))
    try:
        yield sqlalchemy_url(_with_database(admin_url(), name))
    finally:
        _run(_admin([f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)']))


def sqlite_url(directory: Path) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    return f"sqlite+aiosqlite:///{(directory / 'chargeward.db').resolve()}"
