"""core station messages: NotifyEvent rows, last MeterValues, device model (issue 29, ADR 0035)

``station_events`` keeps a station's NotifyEvent entries, pruned to a per-station cap and an
age limit on every write; ``stations.meter_values`` the last MeterValues per EVSE and
``stations.device_model`` the last complete NotifyReport, both bounded in size.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-07 19:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("stations", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("meter_values", sa.JSON(), server_default="{}", nullable=False)
        )
        batch_op.add_column(sa.Column("device_model", sa.JSON(), nullable=True))
    op.create_table(
        "station_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("station_id", sa.String(length=48), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.Column("trigger", sa.String(length=20), nullable=False),
        sa.Column("notification_type", sa.String(length=30), nullable=False),
        sa.Column("component", sa.String(length=50), nullable=False),
        sa.Column("variable", sa.String(length=50), nullable=False),
        sa.Column("actual_value", sa.String(length=2500), nullable=False),
        sa.Column("tech_code", sa.String(length=50), nullable=True),
        sa.Column("tech_info", sa.String(length=500), nullable=True),
        sa.Column("cleared", sa.Boolean(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("station_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_station_events_station_id"), ["station_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("station_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_station_events_station_id"))
    op.drop_table("station_events")
    with op.batch_alter_table("stations", schema=None) as batch_op:
        batch_op.drop_column("device_model")
        batch_op.drop_column("meter_values")
