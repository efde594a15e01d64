"""audit log in an RFC 6962 Merkle tree: leaf index and hash per entry, subtree nodes,
tree head, signed checkpoints; existing entries back-filled in id order

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-08 10:00:00
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from alembic import op

from chargeward.audit.leaves import canonical_entry
from chargeward.audit.merkle import MemoryTree, append_batch

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_ENTRIES = sa.table(
    "audit_entries",
    sa.column("id", sa.Integer),
    sa.column("time", sa.DateTime(timezone=True)),
    sa.column("actor", sa.String),
    sa.column("action", sa.String),
    sa.column("target", sa.String),
    sa.column("transaction_id", sa.String),
    sa.column("details", sa.JSON),
    sa.column("leaf_index", sa.BigInteger),
    sa.column("leaf_hash", sa.LargeBinary),
)
_NODES = sa.table(
    "audit_nodes",
    sa.column("level", sa.Integer),
    sa.column("idx", sa.BigInteger),
    sa.column("hash", sa.LargeBinary),
)
_HEAD = sa.table("audit_tree_head", sa.column("id", sa.Integer), sa.column("size", sa.BigInteger))
_CHUNK = 10_000


def upgrade() -> None:
    op.create_table(
        "audit_nodes",
        sa.Column("level", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("idx", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.LargeBinary(length=32), nullable=False),
        sa.PrimaryKeyConstraint("level", "idx"),
    )
    op.create_table(
        "audit_tree_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "audit_checkpoints",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("root_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("audit_checkpoints", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_checkpoints_size"), ["size"], unique=False)

    _drop_append_only()  # the back-fill updates every existing entry
    with op.batch_alter_table("audit_entries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("leaf_index", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("leaf_hash", sa.LargeBinary(length=32), nullable=True))
    size = _backfill()
    op.bulk_insert(_HEAD, [{"id": 1, "size": size}])
    with op.batch_alter_table("audit_entries", schema=None) as batch_op:
        batch_op.alter_column("leaf_index", existing_type=sa.BigInteger(), nullable=False)
        batch_op.alter_column("leaf_hash", existing_type=sa.LargeBinary(length=32), nullable=False)
        batch_op.create_index(
            batch_op.f("ix_audit_entries_leaf_index"), ["leaf_index"], unique=True
        )
    _create_append_only()  # SQLite's table was rebuilt above: its triggers went with it


def _backfill() -> int:
    """Leaf indexes in id order, leaf hashes and the tree's nodes; returns the tree size."""
    conn = op.get_bind()
    tree = MemoryTree()
    rows = conn.execute(sa.select(_ENTRIES).order_by(_ENTRIES.c.id)).mappings().all()
    for start in range(0, len(rows), _CHUNK):
        chunk = rows[start : start + _CHUNK]
        leaves = [
            canonical_entry(
                index=start + n,
                time=_utc(row["time"]),
                actor=row["actor"],
                action=row["action"],
                target=row["target"],
                transaction_id=row["transaction_id"],
                details=row["details"],
            )
            for n, row in enumerate(chunk)
        ]
        nodes = append_batch(tree.size, leaves, tree)
        tree.store(nodes)
        hashes = [n.hash for n in nodes if n.level == 0]
        conn.execute(
            _ENTRIES.update()
            .where(_ENTRIES.c.id == sa.bindparam("row_id"))
            .values(leaf_index=sa.bindparam("li"), leaf_hash=sa.bindparam("lh")),
            [
                {"row_id": row["id"], "li": start + n, "lh": hashes[n]}
                for n, row in enumerate(chunk)
            ],
        )
        conn.execute(
            _NODES.insert(), [{"level": n.level, "idx": n.index, "hash": n.hash} for n in nodes]
        )
    return tree.size


def _utc(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None:  # SQLite stores naive UTC
        return value.replace(tzinfo=dt.UTC)
    return value


# Migration 0001's guards, by name (one statement per execute for asyncpg).
_PG_GUARD = (
    """
CREATE TRIGGER audit_entries_no_update BEFORE UPDATE OR DELETE ON audit_entries
    FOR EACH ROW EXECUTE FUNCTION chargeward_audit_append_only()
""",
    """
CREATE TRIGGER audit_entries_no_truncate BEFORE TRUNCATE ON audit_entries
    FOR EACH STATEMENT EXECUTE FUNCTION chargeward_audit_append_only()
""",
)


def _drop_append_only() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS audit_entries_no_update")
        op.execute("DROP TRIGGER IF EXISTS audit_entries_no_delete")
    elif dialect == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_entries_no_update ON audit_entries")
        op.execute("DROP TRIGGER IF EXISTS audit_entries_no_truncate ON audit_entries")


def _create_append_only() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER audit_entries_no_{verb.lower()} BEFORE {verb} ON audit_entries "
                "BEGIN SELECT RAISE(ABORT, 'audit_entries is append-only'); END"
            )
    elif dialect == "postgresql":
        for statement in _PG_GUARD:
            op.execute(statement)


def downgrade() -> None:
    _drop_append_only()
    with op.batch_alter_table("audit_entries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_entries_leaf_index"))
        batch_op.drop_column("leaf_hash")
        batch_op.drop_column("leaf_index")
    _create_append_only()
    with op.batch_alter_table("audit_checkpoints", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_checkpoints_size"))
    op.drop_table("audit_checkpoints")
    op.drop_table("audit_tree_head")
    op.drop_table("audit_nodes")
