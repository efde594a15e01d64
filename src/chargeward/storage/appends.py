"""Rows that are only ever appended (audit entries, station reports), written in batches.

    queue_insert(session, FirmwareStatusEvent, {"station_id": "CP-1", ...})

An ORM ``session.add`` of such a row costs an ``INSERT ... RETURNING`` of its own on SQLite:
the ORM needs each new primary key back, in order, and SQLite cannot return them for a batch.
Nobody reads these rows back in the transaction that writes them, so they need no identity.
:func:`queue_insert` keeps them on the session instead; they are written per table, in the
order queued, with one executemany each: before the session's next ORM query (like autoflush,
so a query in the same transaction sees them) and before it commits.  A rollback drops them
with the rest of the transaction.

A model may have a writer of its own (:func:`register_writer`) that replaces the plain
executemany: the audit log's assigns leaf indexes and appends to its Merkle tree
(:func:`chargeward.audit.tree.write_entries`).

Lock order (ADR 0031).  That writer first updates the one ``audit_tree_head`` row, which every
audited transaction of every server node updates: the hottest lock in the database.  Rows with
a writer are therefore written last, at commit, after the ORM's final flush, never before a
query: a transaction takes its other row locks (``UPDATE stations`` …) first and the head
lock last, so no transaction holds the head while it waits for another row.  Written before a
later query, as they once were, an audit entry queued early took the head lock mid-transaction;
a campaign POST (head, then stations) and a BootNotification batch (stations, then head)
deadlocked on PostgreSQL.  A query of a writer's own model, and :func:`write_queued`, still
write them first, so a transaction that reads its own audit entries sees them.

Station reports take no head lock at all on PostgreSQL (ADR 0033): their sessions are marked
(:func:`chargeward.audit.sequencer.defer`), and :func:`chargeward.audit.record` queues their
entries as plain ``audit_queue`` rows (a model without a writer, written like firmware status
events); a sequencer appends them to the tree in transactions of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, event, insert
from sqlalchemy.orm import DeclarativeBase, ORMExecuteState, Session

_QUEUE = "chargeward.append_queue"  # session.info: {model: [row values]}, insertion-ordered

Writer = Callable[[Connection, list[dict[str, Any]]], None]
_WRITERS: dict[type[DeclarativeBase], Writer] = {}


def register_writer(model: type[DeclarativeBase], writer: Writer) -> None:
    """Write queued rows of ``model`` with ``writer(connection, rows)``, in queue order."""
    _WRITERS[model] = writer


def queue_insert(session: Any, model: type[DeclarativeBase], values: dict[str, Any]) -> None:
    """Queue one row of ``model`` (an AsyncSession or a Session) for the batched write."""
    queue: dict[type[DeclarativeBase], list[dict[str, Any]]] = session.info.setdefault(_QUEUE, {})
    queue.setdefault(model, []).append(values)


def write_queued(session: Session, *, held: bool = True) -> None:
    """Write what is queued now; rows with a writer only if ``held`` (the last locks taken)."""
    queue: dict[type[DeclarativeBase], list[dict[str, Any]]] | None = session.info.get(_QUEUE)
    if not queue:
        return
    due = [m for m in queue if held or m not in _WRITERS]
    if not due:
        return
    conn = session.connection()
    for model in due:
        rows = queue.pop(model)
        writer = _WRITERS.get(model)
        if writer is not None:
            writer(conn, rows)
        else:
            conn.execute(insert(model), rows)


@event.listens_for(Session, "before_commit")
def _write_before_commit(session: Session) -> None:
    # The ORM flushes after this event: flush first, so the writers' locks come last.
    if session.info.get(_QUEUE):
        session.flush()
    write_queued(session)


@event.listens_for(Session, "do_orm_execute")
def _write_before_query(state: ORMExecuteState) -> None:
    reads_held = any(m.class_ in _WRITERS for m in state.all_mappers)
    write_queued(state.session, held=reads_held)


@event.listens_for(Session, "after_rollback")
def _drop_on_rollback(session: Session) -> None:
    session.info.pop(_QUEUE, None)
