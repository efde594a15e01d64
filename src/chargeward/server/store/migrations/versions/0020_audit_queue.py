"""audit queue: station reports on PostgreSQL queue their audit entries here, and a sequencer
appends them to the Merkle tree, so a report takes no lock on the one audit_tree_head row
(ADR 0033)

The guard keeps the append-only spirit of ``audit_entries``: a queued entry is never edited,
and leaves the queue only in a transaction that appended to the log (it updated the tree head
row, so the head's ``xmin`` is this transaction).  SQLite does not queue (one writer at a
time anyway); it refuses UPDATE only.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07 18:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

# One statement per execute: asyncpg prepares each statement and refuses several at once.
_PG_GUARD = (
    """
CREATE OR REPLACE FUNCTION chargeward_audit_queue_guard() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' AND EXISTS (
        SELECT 1 FROM audit_tree_head WHERE id = 1 AND xmin = pg_current_xact_id()::xid
    ) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit_queue: an entry leaves the queue only by being appended to the log';
END;
$$ LANGUAGE plpgsql
""",
    """
CREATE TRIGGER audit_queue_guard BEFORE UPDATE OR DELETE ON audit_queue
    FOR EACH ROW EXECUTE FUNCTION chargeward_audit_queue_guard()
""",
    # TRUNCATE bypasses row triggers: refuse it with a statement trigger.
    """
CREATE TRIGGER audit_queue_no_truncate BEFORE TRUNCATE ON audit_queue
    FOR EACH STATEMENT EXECUTE FUNCTION chargeward_audit_queue_guard()
""",
)


def upgrade() -> None:
    op.create_table(
        "audit_queue",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("action", sa.String(length=60), nullable=False),
        sa.Column("target", sa.String(length=200), nullable=False),
        sa.Column("transaction_id", sa.String(length=36), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("enqueued_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        for statement in _PG_GUARD:
            op.execute(statement)
    elif dialect == "sqlite":
        op.execute(
            "CREATE TRIGGER audit_queue_no_update BEFORE UPDATE ON audit_queue "
            "BEGIN SELECT RAISE(ABORT, 'audit_queue: a queued entry is never edited'); END"
        )


def downgrade() -> None:
    waiting = op.get_bind().scalar(sa.text("SELECT count(*) FROM audit_queue"))
    if waiting:
        raise RuntimeError(
            f"{waiting} audit entries are still queued: start a server of revision 0020 "
            "until its sequencer has appended them, then downgrade"
        )
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_queue_no_truncate ON audit_queue")
        op.execute("DROP TRIGGER IF EXISTS audit_queue_guard ON audit_queue")
        op.execute("DROP FUNCTION IF EXISTS chargeward_audit_queue_guard()")
    elif dialect == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS audit_queue_no_update")
    op.drop_table("audit_queue")
