"""The audit seam: every privileged action and every station result goes through :func:`record`.

    await record(session, actor="alice", action="release.upload", target=release_id,
                 details={"version": "1.2.0"})

Entries are written to an append-only table in the same transaction as the change they
describe, so an action and its audit entry are committed together or not at all.  The storage
behind this function can change (a Merkle log) without touching any caller.

:func:`record` queues the entry on the session (:mod:`chargeward.storage.appends`): a
transaction of many station reports writes its entries in one executemany, in order.
When they are written each entry becomes the next leaf of the log's RFC 6962 Merkle tree
(:mod:`chargeward.audit.tree`); signed checkpoints of the tree (:mod:`chargeward.audit.log`)
let anyone holding the log's verifier key check an export offline (:mod:`.verify`).

Station reports on PostgreSQL are the exception (ADR 0033): the group commit marks its
sessions (:func:`chargeward.audit.sequencer.defer`), and their entries are inserted into the
``audit_queue`` table instead, committed with the report but without the tree head's row
lock; a sequencer on every server node appends them to the tree moments later, in queue
order, and the audit API settles the queue before it reads.  Such an entry is atomic with
its report all the same: both are committed, or neither.

Principals: the actor is a name; an entry made by a host token (a token made on the server
host, acting under its own name) also says so in its details, ``"principal": "token"``.  The
API's authorization marks a request made with a host token (:func:`acting_host_token`); an
entry of that request whose actor is the token's name gets the mark.  User names and host
token names cannot collide any more; entries written before keep their details (ADR 0028).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from chargeward.audit import sequencer, tree
from chargeward.audit.leaves import canonical_json
from chargeward.audit.tables import AuditEntry, AuditQueued
from chargeward.storage.appends import queue_insert, register_writer

SYSTEM = "system"
PRINCIPAL_KEY = "principal"  # in details: "token" for a host token (ADR 0028)
HOST_TOKEN = "token"  # noqa: S105 (a principal kind, not a secret)
# The host token making the current API request, if it is one (set per request by authz).
_HOST_TOKEN: ContextVar[str | None] = ContextVar("chargeward_audit_host_token", default=None)


def acting_host_token(name: str | None) -> None:
    """Mark the current request (task context) as made by host token ``name`` (None: not)."""
    _HOST_TOKEN.set(name)


def _marked(actor: str, details: dict[str, Any] | None) -> dict[str, Any]:
    """``details``, with ``"principal": "token"`` when ``actor`` is the calling host token."""
    if actor != _HOST_TOKEN.get():
        return details or {}
    return {**(details or {}), PRINCIPAL_KEY: HOST_TOKEN}


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
    """Append one audit entry in the caller's transaction (or, in a session marked with
    :func:`chargeward.audit.sequencer.defer`, queue it there for the sequencer)."""
    values = {
        "time": now or dt.datetime.now(dt.UTC),
        "actor": actor[:100],
        "action": action,
        "target": target[:200],
        "transaction_id": transaction_id,
        "details": _marked(actor, details),
    }
    if sequencer.deferred(session):
        # Stored as it will be hashed (JSON turns tuples into lists), as write_entries does.
        values["details"] = json.loads(canonical_json(values["details"]))
        values["enqueued_at"] = dt.datetime.now(dt.UTC)
        queue_insert(session, AuditQueued, values)
        return
    queue_insert(session, AuditEntry, values)


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
