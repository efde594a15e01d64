"""scale-out: station commands across nodes, node presence

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-21 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cluster_nodes",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("api_url", sa.String(length=200), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "station_presence",
        sa.Column("station_id", sa.String(length=48), nullable=False),
        sa.Column("node_id", sa.String(length=36), nullable=False),
        sa.Column("connected_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("station_id"),
    )
    with op.batch_alter_table("station_presence", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_station_presence_node_id"), ["node_id"])
    op.create_table(
        "station_commands",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("node_id", sa.String(length=36), nullable=False),
        sa.Column("station_id", sa.String(length=48), nullable=False),
        sa.Column("method", sa.String(length=60), nullable=False),
        sa.Column("args", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deadline_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("station_commands", schema=None) as batch_op:
        batch_op.create_index("ix_station_commands_claim", ["node_id", "state"])


def downgrade() -> None:
    op.drop_table("station_commands")
    op.drop_table("station_presence")
    op.drop_table("cluster_nodes")
