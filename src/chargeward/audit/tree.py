"""The audit log's Merkle tree in the database: appending entries, reading roots and proofs.

Synchronous, on a SQLAlchemy :class:`~sqlalchemy.Connection` (async callers go through
``session.run_sync``).  Three tables hold the tree (:mod:`chargeward.audit.tables`):
``audit_entries`` gets each entry's ``leaf_index`` and ``leaf_hash``, ``audit_nodes`` the
perfect-subtree hashes of :mod:`chargeward.audit.merkle`, ``audit_tree_head`` the size.

    write_entries(conn, [{"time": now, "actor": "alice", ...}])
    root(tree_size(conn), ConnectionReader(conn))

:func:`write_entries` is how :mod:`chargeward.storage.appends` writes queued audit entries,
and how the sequencer appends what station reports left in the ``audit_queue`` table on
PostgreSQL (:mod:`chargeward.audit.sequencer`, ADR 0033).
It first increments the head row (``UPDATE ... RETURNING``): on PostgreSQL that takes the
row lock a ``SELECT ... FOR UPDATE`` would take, so concurrent transactions append one after
the other and get distinct, consecutive leaf indexes; on SQLite the statement takes the
database write lock.  Then one query (an OR of primary-key lookups) reads the nodes the
new leaves complete, and the entries and new nodes are inserted with one executemany each.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, and_, insert, or_, select, update

from chargeward.audit import merkle
from chargeward.audit.leaves import canonical_entry, canonical_json
from chargeward.audit.tables import AuditEntry, AuditNode, AuditTreeHead

HEAD_ID = 1


class ConnectionReader:
    """A :class:`~chargeward.audit.merkle.NodeReader` over ``audit_nodes``: one query a call."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def get_many(self, keys: Sequence[merkle.Key]) -> Mapping[merkle.Key, bytes]:
        if not keys:
            return {}
        # ``(level, idx) IN (...)`` scans the whole table on SQLite (and is no better on
        # PostgreSQL); an OR of primary-key lookups is a handful of index searches on both.
        rows = self.conn.execute(
            select(AuditNode.level, AuditNode.idx, AuditNode.hash).where(
                or_(*(and_(AuditNode.level == lv, AuditNode.idx == ix) for lv, ix in keys))
            )
        )
        return {(level, idx): bytes(value) for level, idx, value in rows}


def tree_size(conn: Connection) -> int:
    """The number of leaves committed (as this connection sees them)."""
    size = conn.scalar(select(AuditTreeHead.size).where(AuditTreeHead.id == HEAD_ID))
    if size is None:
        raise merkle.TreeStorageError("audit_tree_head has no row: the migration did not run")
    return int(size)


def leaf_of(row: Mapping[str, Any], index: int) -> bytes:
    """The canonical leaf bytes of an ``audit_entries`` row placed at ``index``."""
    return canonical_entry(
        index=index,
        time=row["time"],
        actor=row["actor"],
        action=row["action"],
        target=row["target"],
        transaction_id=row["transaction_id"],
        details=row["details"],
    )


def write_entries(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Append queued ``audit_entries`` rows (values of :func:`chargeward.audit.record`)."""
    if not rows:
        return
    new_size = conn.execute(
        update(AuditTreeHead)
        .where(AuditTreeHead.id == HEAD_ID)
        .values(size=AuditTreeHead.size + len(rows))
        .returning(AuditTreeHead.size)
    ).scalar()
    if new_size is None:
        raise merkle.TreeStorageError("audit_tree_head has no row: the migration did not run")
    start = int(new_size) - len(rows)
    leaves = []
    for offset, row in enumerate(rows):
        # Stored exactly as hashed: JSON turns tuples into lists and keys into strings.
        row["details"] = json.loads(canonical_json(row["details"]))
        row["leaf_index"] = start + offset
        leaves.append(leaf_of(row, start + offset))
    nodes = merkle.append_batch(start, leaves, ConnectionReader(conn))
    leaf_hashes = iter(n.hash for n in nodes if n.level == 0)
    for row in rows:
        row["leaf_hash"] = next(leaf_hashes)
    conn.execute(insert(AuditEntry), rows)
    conn.execute(
        insert(AuditNode), [{"level": n.level, "idx": n.index, "hash": n.hash} for n in nodes]
    )
