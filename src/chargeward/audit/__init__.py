"""The audit seam: every privileged action and every station result goes through :func:`record`.

    >>> await record(session, actor="alice", action="release.upload", target=release_id,
    ...              details={"version": "1.2.0"})  # doctest: +SKIP

Entries are written to an append-only table in the same transaction as the change they
describe, so an action and its audit entry are committed together or not at all.  The storage
behind this function can change (a Merkle log) without touching any caller.

:func:`record` queues the entry on the session (:mod:`chargeward.server.appends`): a
transaction of many station reports writes its entries in one executemany, in order.
When they are written each entry becomes the next leaf of the log's RFC 6962 Merkle tree
(:mod:`chargeward.audit.tree`); signed checkpoints of the tree (:mod:`chargeward.audit.log`)
let anyone holding the log's verifier key check an export offline (:mod:`.verify`).
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from chargeward.audit import tree
from chargeward.server.appends import queue_insert, register_writer
from chargeward.server.tables import AuditEntry

SYSTEM = "system"

register_writer(AuditEntry, tree.write_entries)


def new_transaction_id() -> str:
    """A transaction id that follows one operation from request to final status."""
    return str(uuid.uuid4())


@dataclass(frozen=True)
class Entry:
    id: int
    leaf_index: int
    leaf_hash: bytes
    time: dt.datetime
    actor: str
    action: str
    target: str
    transaction_id: str | None
    details: dict[str, Any]


async def record(
    session: AsyncSession,
    *,
    actor: str,
    action: str,
    target: str,
    details: dict[str, Any] | None = None,
    transaction_id: str | None = None,
    now: dt.datetime | None = None,
) -> None:
    """Append one audit entry in the caller's transaction."""
    queue_insert(
        session,
        AuditEntry,
        {
            "time": now or dt.datetime.now(dt.UTC),
            "actor": actor[:100],
            "action": action,
            "target": target[:200],
            "transaction_id": transaction_id,
            "details": details or {},
        },
    )


async def entries(
    session: AsyncSession,
    *,
    transaction_id: str | None = None,
    target: str | None = None,
    start: int = 0,
    limit: int = 1000,
) -> list[Entry]:
    """Read entries in append (leaf) order from leaf ``start``, optionally for one
    transaction or target."""
    q = select(AuditEntry).order_by(AuditEntry.leaf_index).limit(limit)
    if start:
        q = q.where(AuditEntry.leaf_index >= start)
    if transaction_id is not None:
        q = q.where(AuditEntry.transaction_id == transaction_id)
    if target is not None:
        q = q.where(AuditEntry.target == target)
    rows = (await session.scalars(q)).all()
    return [
        Entry(
            r.id,
            r.leaf_index,
            bytes(r.leaf_hash),
            r.time,
            r.actor,
            r.action,
            r.target,
            r.transaction_id,
            r.details,
        )
        for r in rows
    ]
