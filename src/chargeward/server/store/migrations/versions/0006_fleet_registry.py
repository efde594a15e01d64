"""fleet registry: sites, models with support periods, station inventory, alerts

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-21 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMNs (no table rebuild on SQLite); site_id is checked by the service.
    with op.batch_alter_table("stations") as batch:
        batch.add_column(sa.Column("site_id", sa.String(length=48), nullable=True))
        batch.add_column(sa.Column("hardware_revision", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("manufactured_on", sa.Date(), nullable=True))
        batch.add_column(
            sa.Column("reported_firmware", sa.JSON(), nullable=False, server_default="{}")
        )
        batch.add_column(
            sa.Column("expected_firmware", sa.JSON(), nullable=False, server_default="{}")
        )
        batch.create_index("ix_stations_site_id", ["site_id"])
    op.create_table(
        "sites",
        sa.Column("id", sa.String(length=48), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("customer", sa.String(length=64), nullable=True),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("maintenance_windows", sa.JSON(), nullable=False),
        sa.Column("bandwidth_note", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "charger_models",
        sa.Column("id", sa.String(length=20), nullable=False),
        sa.Column("vendor", sa.String(length=50), nullable=True),
        sa.Column("feature_support_years", sa.Integer(), nullable=False),
        sa.Column("security_support_years", sa.Integer(), nullable=False),
        sa.Column("feature_support_end", sa.Date(), nullable=True),
        sa.Column("security_support_end", sa.Date(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "station_tags",
        sa.Column("station_id", sa.String(length=48), nullable=False),
        sa.Column("tag", sa.String(length=40), nullable=False),
        sa.ForeignKeyConstraint(["station_id"], ["stations.id"]),
        sa.PrimaryKeyConstraint("station_id", "tag"),
    )
    op.create_index("ix_station_tags_tag", "station_tags", ["tag"])
    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=30), nullable=False),
        sa.Column("severity", sa.String(length=10), nullable=False),
        sa.Column("station_id", sa.String(length=48), nullable=False),
        sa.Column("key", sa.String(length=100), nullable=False),
        sa.Column("message", sa.String(length=300), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=15), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("acknowledged_by", sa.String(length=100), nullable=True),
        sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_alerts_kind", "alerts", ["kind"])
    op.create_index("ix_alerts_station_id", "alerts", ["station_id"])
    op.create_index("ix_alerts_station_key", "alerts", ["station_id", "key"])
    op.create_index("ix_security_events_type_time", "security_events", ["type", "timestamp"])


def downgrade() -> None:
    op.drop_index("ix_security_events_type_time", table_name="security_events")
    op.drop_table("alerts")
    op.drop_table("station_tags")
    op.drop_table("charger_models")
    op.drop_table("sites")
    with op.batch_alter_table("stations") as batch:
        batch.drop_index("ix_stations_site_id")
        batch.drop_column("expected_firmware")
        batch.drop_column("reported_firmware")
        batch.drop_column("manufactured_on")
        batch.drop_column("hardware_revision")
        batch.drop_column("site_id")
