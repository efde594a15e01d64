"""campaigns: staged rollouts, per-station runs, active transactions per station

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 22:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("stations", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("active_transactions", sa.JSON(), server_default="{}", nullable=False)
        )
        batch_op.add_column(sa.Column("campaign_id", sa.Integer(), nullable=True))
    op.create_table(
        "campaigns",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("release_id", sa.String(length=64), nullable=False),
        sa.Column("release_class", sa.String(length=10), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("expected", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("stage", sa.Integer(), nullable=False),
        sa.Column("stage_sizes", sa.JSON(), nullable=False),
        sa.Column("stage_started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("pause_reason", sa.String(length=300), nullable=True),
        sa.Column("gate_baseline", sa.JSON(), nullable=False),
        sa.Column("rollback_of", sa.Integer(), nullable=True),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("approved_by", sa.String(length=100), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["release_id"], ["releases.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_campaigns_status"), ["status"])
    op.create_table(
        "campaign_stations",
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("station_id", sa.String(length=48), nullable=False),
        sa.Column("stage", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=True),
        sa.Column("run", sa.JSON(), nullable=False),
        sa.Column("deferred", sa.Boolean(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaigns.id"]),
        sa.PrimaryKeyConstraint("campaign_id", "station_id"),
    )
    with op.batch_alter_table("campaign_stations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_campaign_stations_station_id"), ["station_id"])
        batch_op.create_index(batch_op.f("ix_campaign_stations_request_id"), ["request_id"])
        batch_op.create_index("ix_campaign_stations_state", ["campaign_id", "state"])


def downgrade() -> None:
    op.drop_table("campaign_stations")
    op.drop_table("campaigns")
    with op.batch_alter_table("stations", schema=None) as batch_op:
        batch_op.drop_column("campaign_id")
        batch_op.drop_column("active_transactions")
