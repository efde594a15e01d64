"""The audit queue and its sequencer: station reports leave the tree head alone (ADR 0033).

    defer(session)                      # the group commit: this session's entries are queued
    await settle(db.session)            # before an audit read: what is queued, into the log
    task = asyncio.create_task(Sequencer(db.session).run())    # every server node

Appending to the Merkle tree (:func:`chargeward.audit.tree.write_entries`) updates the one
``audit_tree_head`` row; on PostgreSQL every audited transaction of every node waits for that
row lock in turn.  A node paused inside such a transaction (SIGSTOP, a VM freeze) stalled the
station reports of the whole cluster behind it (issue 28).

On PostgreSQL a session marked with :func:`defer` (the group commit of station reports,
:mod:`chargeward.server.stations.group_commit`) records its entries as plain inserts into
``audit_queue`` (:class:`~chargeward.audit.tables.AuditQueued`): no shared row, no lock any
other writer waits for.  A sequencer moves them into the log, in ``id`` order, a bounded batch
a transaction (:func:`sequence`): it locks the head row, takes the oldest queued rows
(``FOR UPDATE SKIP LOCKED``), appends them with ``write_entries`` (consecutive leaf indexes,
the entry's time is the report's) and deletes them, then commits.  The database refuses any
other change to a queued row (migration 0020).  A sequencer that holds the head and stops
delays only other sequencers and the API's direct audit writes, for at most the
idle-in-transaction timeout; never a station report.

Every server node runs a :class:`Sequencer` (polling every :data:`POLL_INTERVAL`); it skips
a round when another transaction holds the head.  A reader that must see what was just
reported calls :func:`settle` first, which appends everything queued so far, waiting up to
:data:`READ_WAIT` for the head.  Everything else (operators' actions, campaign changes, the
leader's jobs) appends directly in its own transaction, which may then read its entries back.

On SQLite :func:`defer` does nothing: one process with one database-wide write lock has no
cluster-wide row to take off the path, and entries keep being appended where they are made.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from sqlalchemy import Connection, delete, func, select
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from chargeward.audit import tree
from chargeward.audit.tables import AuditQueued, AuditTreeHead

LOG = logging.getLogger("chargeward.audit.sequencer")
Sessions = Callable[[], AbstractAsyncContextManager[AsyncSession]]

DEFERRED = "chargeward.audit_deferred"  # session.info: record() queues this session's entries
BATCH = 500  # entries a sequencing transaction appends at most
POLL_INTERVAL = 0.2  # seconds between a sequencer's looks at an empty queue
READ_WAIT = 2.0  # seconds settle() waits for the head lock before reading without the queue
LOCK_TIMEOUT = "55P03"  # SQLSTATE of a lock wait past lock_timeout


def defer(session: AsyncSession) -> bool:
    """Queue the audit entries ``session`` records from now on (PostgreSQL only; whether it
    does).  The session's transaction then never reads its own entries in the log."""
    if session.get_bind().dialect.name != "postgresql":
        return False
    session.info[DEFERRED] = True
    return True


def deferred(session: Any) -> bool:
    """Whether :func:`chargeward.audit.record` queues the entries of ``session``."""
    return bool(session.info.get(DEFERRED))


def sequence(
    conn: Connection, *, batch: int = BATCH, wait: bool = True, upto: int | None = None
) -> int:
    """Append up to ``batch`` queued entries (``id <= upto``) to the log in ``conn``'s
    transaction, oldest first, and delete them from the queue; how many.

    The head row is locked first, so sequencers append one after the other in queue order;
    ``wait=False`` returns 0 at once when another transaction holds it.
    """
    locked = conn.execute(
        select(AuditTreeHead.id)
        .where(AuditTreeHead.id == tree.HEAD_ID)
        .with_for_update(skip_locked=not wait)
    ).scalar()
    if locked is None:
        return 0
    q = (
        select(
            AuditQueued.id,
            AuditQueued.time,
            AuditQueued.actor,
            AuditQueued.action,
            AuditQueued.target,
            AuditQueued.transaction_id,
            AuditQueued.details,
        )
        .order_by(AuditQueued.id)
        .limit(batch)
        .with_for_update(skip_locked=True)
    )
    if upto is not None:
        q = q.where(AuditQueued.id <= upto)
    rows = conn.execute(q).mappings().all()
    if not rows:
        return 0
    tree.write_entries(conn, [{k: v for k, v in row.items() if k != "id"} for row in rows])
    conn.execute(delete(AuditQueued).where(AuditQueued.id.in_([row["id"] for row in rows])))
    return len(rows)


def _sequence_waiting(ss: Session, *, wait: float, batch: int, upto: int) -> int:
    """:func:`sequence`, waiting at most ``wait`` seconds for the head lock."""
    conn = ss.connection()
    conn.exec_driver_sql(f"SET LOCAL lock_timeout = {max(1, int(wait * 1000))}")
    return sequence(conn, batch=batch, upto=upto)


async def queued(sessions: Sessions) -> int:
    """How many entries wait in the queue (metrics, tests)."""
    async with sessions() as s:
        return int(await s.scalar(select(func.count()).select_from(AuditQueued)) or 0)


async def drain(sessions: Sessions, *, batch: int = BATCH) -> int:
    """Append what is queued, a batch a transaction, until the queue is empty or another
    transaction holds the head; how many were appended (the background sequencer's round)."""
    moved = 0
    while True:
        async with sessions() as s:
            n = await s.run_sync(lambda ss: sequence(ss.connection(), batch=batch, wait=False))
        moved += n
        if n < batch:
            return moved


async def settle(sessions: Sessions, *, wait: float = READ_WAIT, batch: int = BATCH) -> bool:
    """Before an audit read: append every entry queued so far, waiting up to ``wait``
    seconds for the head each batch.  False if the head stayed locked (the read then shows
    the log as committed, without them); True at once on SQLite, which queues nothing."""
    upto: int | None = None
    while True:
        try:
            async with sessions() as s:
                if s.get_bind().dialect.name != "postgresql":
                    return True
                if upto is None:
                    upto = await s.scalar(select(func.max(AuditQueued.id)))
                    if upto is None:
                        return True
                n = await s.run_sync(_sequence_waiting, wait=wait, batch=batch, upto=upto)
        except DBAPIError as e:
            state = getattr(e.orig, "pgcode", None) or getattr(e.orig, "sqlstate", None)
            if state != LOCK_TIMEOUT:
                raise
            LOG.warning("audit head locked for %.1f s: reading without the queued entries", wait)
            return False
        if n < batch:
            return True


class Sequencer:
    """Moves queued entries into the log in the background, on every server node."""

    def __init__(
        self, sessions: Sessions, *, interval: float = POLL_INTERVAL, batch: int = BATCH
    ) -> None:
        self.sessions = sessions
        self.interval = interval
        self.batch = batch
        self.appended = 0  # entries this sequencer appended (tests, metrics)
        self.rounds = 0
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Look at the queue now rather than at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        """Drain, then wait for a wake-up or the poll interval; forever (cancel to stop)."""
        while True:
            self._wake.clear()
            try:
                self.appended += await drain(self.sessions, batch=self.batch)
            except (SQLAlchemyError, OSError) as e:  # the database is away: try again later
                LOG.warning("cannot sequence queued audit entries: %s", e)
            self.rounds += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)

    async def close(self, task: asyncio.Task[None]) -> None:
        """Stop ``task`` (running :meth:`run`), then append what is still queued."""
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        try:
            self.appended += await drain(self.sessions, batch=self.batch)
        except (SQLAlchemyError, OSError) as e:
            LOG.warning("queued audit entries left for another node: %s", e)
