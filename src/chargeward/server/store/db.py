"""Database connection: SQLite (WAL) in the data directory by default, PostgreSQL by URL.

    db = await Database.open(data_dir=Path("chargeward-data"))
    async with db.session() as s: ...

``CHARGEWARD_DATABASE_URL=postgresql://user:pass@host/db`` (or ``postgres://``) selects
PostgreSQL through asyncpg.  The schema is brought to the newest Alembic revision when the
database is opened; on PostgreSQL an advisory lock serialises this, so several server processes
may start at once against one database.

A write that can lose to a concurrent transaction (a deadlock or serialization failure on
PostgreSQL, "database is locked" on SQLite) goes through :meth:`Database.write`, which runs it
again in a fresh transaction and raises :class:`DatabaseBusy` once its attempts are spent; the
REST API answers that, and a pool with no free connection, with 503 and Retry-After (ADR 0031).

The leader's jobs run with :data:`LEADER_FENCE` set: each transaction they open through
:meth:`Database.session` or :meth:`Database.serialized` first checks that this node still holds
the leader lease and locks it for the transaction (ADR 0034); :func:`assert_leading` guards
their effects outside the database.

Every PostgreSQL session is bounded by :class:`DatabaseTimeouts`: a transaction left idle (its
node paused or cut off) is ended by the server, a lock wait or a statement gives up, and TCP
keepalives on both ends notice a peer that is gone.  A lock wait that gave up is retried like
a deadlock; a statement that timed out answers 503 with Retry-After.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from chargeward.errors import ChargewardError, ConfigError, MisuseError

LOG = logging.getLogger("chargeward.db")
T = TypeVar("T")
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


@dataclass(frozen=True)
class DatabaseTimeouts:
    """Bounds on every PostgreSQL session of a server, in seconds (0: no bound).

    A node that stops (SIGSTOP, a partition) inside a transaction would otherwise hold its row
    locks, the audit head's among them, and every other node's writes would queue behind it
    for as long as it stays stopped.  ``idle_in_transaction`` ends such a transaction on the
    server; ``lock`` makes a waiter give up (its write is retried, then answers 503) instead
    of queueing; ``statement`` ends a runaway query; the keepalives let the server drop the
    session of a peer that vanished, and the client notice a server that did.  Migrations run
    without the lock and statement bounds: they wait for one another and may take long.
    """

    idle_in_transaction: float = 30.0
    lock: float = 10.0
    statement: float = 60.0
    keepalives_idle: int = 30  # seconds of silence before the first probe
    keepalives_interval: int = 10  # seconds between probes
    keepalives_count: int = 3  # unanswered probes before the connection is dropped

    def server_settings(self) -> dict[str, str]:
        """PostgreSQL settings for a session's startup packet (asyncpg ``server_settings``)."""

        def ms(seconds: float) -> str:
            return f"{round(seconds * 1000)}ms"

        return {
            "idle_in_transaction_session_timeout": ms(self.idle_in_transaction),
            "lock_timeout": ms(self.lock),
            "statement_timeout": ms(self.statement),
            "tcp_keepalives_idle": str(self.keepalives_idle),
            "tcp_keepalives_interval": str(self.keepalives_interval),
            "tcp_keepalives_count": str(self.keepalives_count),
        }

    def keep_alive(self, connection: Any) -> None:
        """Turn on TCP keepalives at the client end of an asyncpg connection's socket."""
        transport = getattr(connection, "_transport", None)  # asyncpg has no public accessor
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
            return  # a Unix socket: no network to lose
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for option, value in (
            ("TCP_KEEPIDLE", self.keepalives_idle),
            ("TCP_KEEPINTVL", self.keepalives_interval),
            ("TCP_KEEPCNT", self.keepalives_count),
        ):
            if hasattr(socket, option) and value > 0:
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


DEFAULT_TIMEOUTS = DatabaseTimeouts()

# SQLSTATEs of a transaction that lost to a concurrent one: run it again and it may pass.
LOST_TO_CONCURRENT = {
    "40001": "serialization failure",
    "40P01": "deadlock",
    "55P03": "lock wait timed out",  # lock_timeout: a holder kept the lock too long
}
TIMED_OUT = {"57014": "statement timed out"}  # statement_timeout: answered 503, not retried
TOO_MANY_CONNECTIONS = "53300"  # PostgreSQL refused a new connection: max_connections reached
WRITE_ATTEMPTS = 5  # tries of one write before it answers DatabaseBusy
FENCE_ATTEMPTS = 3  # tries of a serialized transaction's leader fence (a renewal in between)
RETRY_BASE_DELAY = 0.02  # seconds; attempt n waits up to base * 2**n (full jitter)
RETRY_AFTER = 1  # seconds a client is told to wait after a DatabaseBusy or a pool timeout


class LeadershipLost(ChargewardError):
    """This node's leader lease ran out or passed to another node: a leader job stops
    before it writes or sends anything.  Nothing of the transaction was committed."""


class Fence(Protocol):
    """The leader's fencing (``chargeward.server.cluster``): a leader job's transactions and
    station commands run only while this node holds the lease."""

    def check_local(self) -> None:
        """Raise :class:`LeadershipLost` if the lease may have run out by this process's
        clock (a node paused past it notices before it acts)."""

    async def check(self, s: AsyncSession) -> None:
        """As :meth:`check_local`, then in ``s``'s transaction: the lease is still this
        node's, and stays so until the transaction ends (the row is locked FOR SHARE)."""


# Set in the tasks of the leader's jobs; every transaction they open is fenced.
LEADER_FENCE: ContextVar[Fence | None] = ContextVar("chargeward_leader_fence", default=None)


def assert_leading() -> None:
    """Before an effect outside the database in a leader job (a station command): raise
    :class:`LeadershipLost` if this node may no longer lead.  A no-op outside leader jobs."""
    fence = LEADER_FENCE.get()
    if fence is not None:
        fence.check_local()


async def _fenced(s: AsyncSession) -> None:
    fence = LEADER_FENCE.get()
    if fence is not None:
        await fence.check(s)


class DatabaseBusy(ChargewardError):
    """The database could not take the work now: try again in ``retry_after`` seconds.

    A write that kept losing to concurrent transactions, or no free connection in the pool.
    Nothing of the work was committed.
    """

    def __init__(self, message: str, *, retry_after: int = RETRY_AFTER) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def _sqlstate(exc: DBAPIError) -> str | None:
    code = getattr(exc.orig, "pgcode", None) or getattr(exc.orig, "sqlstate", None)
    return code if isinstance(code, str) else None


def lost_to_concurrent(exc: BaseException) -> str | None:
    """Why ``exc`` ended a transaction that may pass if run again, or None if it may not.

    PostgreSQL's serialization failure (40001) and deadlock (40P01), SQLite's "database is
    locked" (another writer held the lock past the busy timeout).
    """
    if not isinstance(exc, DBAPIError):
        return None
    state = _sqlstate(exc)
    if state in LOST_TO_CONCURRENT:
        return LOST_TO_CONCURRENT[state]
    if "database is locked" in str(exc.orig):
        return "database is locked"
    return None


def unavailable(exc: BaseException) -> str | None:
    """Why the database cannot take work now (answered 503 with Retry-After), or None.

    A pool timeout (every connection busy), PostgreSQL refusing a connection for lack of
    slots, a write that lost to concurrent ones (retries spent, or work that was not retried),
    a statement that ran past ``statement_timeout``.
    """
    if isinstance(exc, DatabaseBusy):
        return str(exc)
    if isinstance(exc, PoolTimeout):
        return "no free database connection"
    if isinstance(exc, DBAPIError) and _sqlstate(exc) == TOO_MANY_CONNECTIONS:
        return "the database has no free connection slot"
    timed_out = TIMED_OUT.get(_sqlstate(exc) or "") if isinstance(exc, DBAPIError) else None
    if timed_out is not None:
        return f"the database is busy ({timed_out})"
    return lost_to_concurrent(exc)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def _upgrade(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":  # one migrating process at a time
        # No lock or statement bound: a process waits for another's migration, which may
        # rewrite large tables.  SET LOCAL ends with this transaction.
        connection.execute(text("SET LOCAL lock_timeout = 0"))
        connection.execute(text("SET LOCAL statement_timeout = 0"))
        connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK})
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, "head")


class Database:
    """An engine plus a session factory."""

    def __init__(self, engine: AsyncEngine, timeouts: DatabaseTimeouts = DEFAULT_TIMEOUTS) -> None:
        self.engine = engine
        self.timeouts = timeouts  # the bounds its PostgreSQL sessions were opened with
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self.write_attempts = WRITE_ATTEMPTS
        self.retried = 0  # writes run again after losing to a concurrent one (tests, metrics)

    @classmethod
    async def open(
        cls,
        *,
        data_dir: Path,
        url: str | None = None,
        timeouts: DatabaseTimeouts = DEFAULT_TIMEOUTS,
    ) -> Database:
        """Open (and migrate) the database; PostgreSQL sessions are bounded by ``timeouts``."""
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
                connect_args={} if sqlite else {"server_settings": timeouts.server_settings()},
            )
        except Exception as e:  # invalid URL, missing driver
            raise ConfigError(f"cannot use database URL {safe_url(url)}: {e}") from e
        if sqlite:
            event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        else:

            def keep_alive(dbapi_connection: Any, _record: Any) -> None:
                timeouts.keep_alive(dbapi_connection.driver_connection)

            event.listen(engine.sync_engine, "connect", keep_alive)
        try:
            async with engine.begin() as conn:
                await conn.run_sync(_upgrade)
        except (OSError, SQLAlchemyError) as e:
            await engine.dispose()
            reason = getattr(e, "orig", None) or e
            raise ConfigError(f"cannot open database {safe_url(url)}: {reason}") from e
        return cls(engine, timeouts)

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.engine.dialect.name

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session in a transaction: committed on success, rolled back on error."""
        async with self._session() as s, s.begin():
            await _fenced(s)
            yield s

    def writing(self) -> contextlib.AbstractAsyncContextManager[AsyncSession]:
        """A session that writes what it read, committed on success: no other writer commits
        between its reads and its writes.  PostgreSQL: :meth:`session` (the rows it reads for
        an update are locked ``FOR UPDATE``).  SQLite ignores ``FOR UPDATE``, so the whole
        transaction takes the write lock at its start (:meth:`serialized`, ``BEGIN
        IMMEDIATE``): a station report stepping a campaign run never writes over a tick's
        change it did not see (a lost update: a completed campaign with a run still soaking).
        """
        return self.serialized() if self.engine.dialect.name == "sqlite" else self.session()

    @asynccontextmanager
    async def _session(self) -> AsyncIterator[AsyncSession]:
        """A session whose connection goes back to the pool even when the task holding it is
        cancelled again while it closes (a station's handler when its connection drops): the
        close is shielded, so the rollback that resets the connection is never cut short."""
        s = self._sessions()
        try:
            yield s
        finally:
            await asyncio.shield(s.close())

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
        async with self._session() as s:
            if self.engine.dialect.name == "sqlite":
                conn = await s.connection()
                await conn.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                await s.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            try:
                await self._fenced_snapshot(s)
                yield s
            except BaseException:
                await s.rollback()
                raise
            await s.commit()

    async def _fenced_snapshot(self, s: AsyncSession) -> None:
        """The leader fence as the first statement of a REPEATABLE READ transaction.  Its row
        lock fails the transaction when the lease was renewed since the snapshot was taken
        (that statement's own start): begun again, the check waits for no one."""
        for attempt in range(1, FENCE_ATTEMPTS + 1):
            try:
                await _fenced(s)
                return
            except DBAPIError as e:
                if lost_to_concurrent(e) is None or attempt == FENCE_ATTEMPTS:
                    raise
            await s.rollback()
            await s.connection(execution_options={"isolation_level": "REPEATABLE READ"})

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[AsyncSession]:
        """A read-only session whose queries all see one consistent state of the database.

        Plain sessions read each statement at its own moment (pysqlite opens a transaction
        only before a write; PostgreSQL defaults to READ COMMITTED), so a view assembled from
        several queries could mix before and after a concurrent commit.
        """
        async with self._session() as s:
            if self.engine.dialect.name == "sqlite":
                conn = await s.connection()
                await conn.exec_driver_sql("BEGIN")  # a deferred read transaction: one snapshot
            else:
                await s.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            try:
                yield s
            finally:
                await s.rollback()

    async def write(
        self, work: Callable[[AsyncSession], Awaitable[T]], *, serialized: bool = False
    ) -> T:
        """``await work(s)`` in a transaction of its own, committed; its result.

        If the transaction loses to a concurrent one (see :func:`lost_to_concurrent`), it is
        rolled back and ``work`` runs again on a fresh session, which reads the state as it
        is now, after a jittered back-off; after :attr:`write_attempts` tries it raises
        :class:`DatabaseBusy`.  ``work`` may therefore run more than once: it must act only
        on its session (no station messages, no files a rerun would duplicate), and do
        anything with effects outside the database after this returns.  ``serialized`` runs
        it in :meth:`serialized` instead of :meth:`session`.
        """
        for attempt in range(1, self.write_attempts + 1):
            try:
                async with self.serialized() if serialized else self.session() as s:
                    return await work(s)
            except DBAPIError as e:
                reason = lost_to_concurrent(e)
                if reason is None:
                    raise
                if attempt == self.write_attempts:
                    raise DatabaseBusy(
                        f"the database is busy ({reason} on {attempt} attempts)"
                    ) from e
                LOG.info("write attempt %d lost to a concurrent one (%s)", attempt, reason)
            self.retried += 1
            await asyncio.sleep(random.uniform(0, RETRY_BASE_DELAY * 2**attempt))  # noqa: S311
        raise MisuseError(f"write_attempts must be at least 1, not {self.write_attempts}")

    async def close(self) -> None:
        await self.engine.dispose()
