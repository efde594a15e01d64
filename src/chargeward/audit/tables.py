"""The audit log's tables: entries (the leaves), the Merkle tree's nodes and head, and the
signed checkpoints.  The log owns them; the server's schema includes them
(:mod:`chargeward.server.store.tables`), and the migrations create them.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import BigInteger, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from chargeward.storage.base import Base


class AuditEntry(Base):
    """Append-only: UPDATE and DELETE are refused by the database (see the migration)."""

    __tablename__ = "audit_entries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    time: Mapped[dt.datetime]
    actor: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(60))
    target: Mapped[str] = mapped_column(String(200))
    transaction_id: Mapped[str | None] = mapped_column(String(36), index=True)
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Position in the Merkle log and SHA-256(0x00 || canonical entry) (chargeward.audit.tree).
    leaf_index: Mapped[int] = mapped_column(BigInteger, index=True, unique=True)
    leaf_hash: Mapped[bytes] = mapped_column(LargeBinary(32))


Index("ix_audit_action", AuditEntry.action)


class AuditNode(Base):
    """A perfect-subtree hash of the audit log's Merkle tree (:mod:`chargeward.audit.merkle`):
    level 0 holds the leaf hashes; ``(level, idx)`` covers leaves ``[idx * 2**level, ...)``."""

    __tablename__ = "audit_nodes"

    level: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[bytes] = mapped_column(LargeBinary(32))


class AuditTreeHead(Base):
    """One row (``id`` 1): how many leaves the audit log has.  Appending locks this row."""

    __tablename__ = "audit_tree_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    size: Mapped[int] = mapped_column(BigInteger)


class AuditCheckpoint(Base):
    """A signed tree head: a C2SP checkpoint as a signed note (:mod:`..audit.checkpoint`)."""

    __tablename__ = "audit_checkpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    size: Mapped[int] = mapped_column(BigInteger, index=True)
    root_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    note: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime]


class AuditQueued(Base):
    """An entry waiting for its leaf (:mod:`chargeward.audit.sequencer`, ADR 0033).

    Station reports on PostgreSQL insert here instead of appending to the tree, so they take
    no ``audit_tree_head`` lock; a sequencer appends these rows in ``id`` order and deletes
    them in the same transaction.  The database refuses an UPDATE, a TRUNCATE, and a DELETE
    in a transaction that did not append to the log (see migration 0020).
    """

    __tablename__ = "audit_queue"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    time: Mapped[dt.datetime]  # the report's time: the entry's time once appended
    actor: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(60))
    target: Mapped[str] = mapped_column(String(200))
    transaction_id: Mapped[str | None] = mapped_column(String(36))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    enqueued_at: Mapped[dt.datetime]
