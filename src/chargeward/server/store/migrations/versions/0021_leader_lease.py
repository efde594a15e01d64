"""cluster leadership as a lease with fencing (issue 28, ADR 0034)

One row, ``id`` 1: which node leads, until when (``lease_until``, the database's time), and
its ``epoch``, raised by every new leader.  A leader renews its lease every round; another
node takes it once it ran out, or at once when the leader's lease connection
(``backend_pid``) is gone.  Transactions of the leader's jobs lock the row (FOR SHARE) after
checking the lease is theirs, so no new leader starts while an old one's write is in flight.
Before: a session-level advisory lock, held for as long as a SIGSTOPped node's connection.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-07 18:00:00
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    leader = op.create_table(
        "cluster_leader",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("node_id", sa.String(length=36), nullable=True),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("backend_pid", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.bulk_insert(
        leader,
        [
            {
                "id": 1,
                "node_id": None,
                "epoch": 0,
                "lease_until": dt.datetime(2000, 1, 1, tzinfo=dt.UTC),
            }
        ],
    )


def downgrade() -> None:
    op.drop_table("cluster_leader")
