"""station logs: GetLog requests with one-time upload tokens, and LogStatusNotifications

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "station_logs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("transaction_id", sa.String(length=36), nullable=False),
        sa.Column("station_id", sa.String(length=48), nullable=False),
        sa.Column("log_type", sa.String(length=20), nullable=False),
        sa.Column("oldest", sa.DateTime(timezone=True), nullable=True),
        sa.Column("latest", sa.DateTime(timezone=True), nullable=True),
        sa.Column("requested_by", sa.String(length=100), nullable=False),
        sa.Column("token_sha256", sa.String(length=64), nullable=False),
        sa.Column("token_expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("token_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("response_status", sa.String(length=30), nullable=True),
        sa.Column("filename", sa.String(length=255), nullable=True),
        sa.Column("last_status", sa.String(length=30), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("length", sa.BigInteger(), nullable=True),
        sa.Column("uploaded_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["station_id"], ["stations.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("transaction_id"),
        sa.UniqueConstraint("token_sha256"),
    )
    with op.batch_alter_table("station_logs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_station_logs_station_id"), ["station_id"])
    op.create_table(
        "log_status_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("station_id", sa.String(length=48), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=30), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("log_status_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_log_status_events_station_id"), ["station_id"])


def downgrade() -> None:
    op.drop_table("log_status_events")
    op.drop_table("station_logs")
