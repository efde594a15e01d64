"""Integration API: stations delivered through an external CSMS, reported events (issue 31)

``station_delivery`` marks a station whose UpdateFirmware an external CSMS sends (``external``;
no row: ``ocpp``, Chargeward is its CSMS).  ``integration_events`` keeps the ``messageId`` of
every event the external CSMS reported, so a retried webhook is recorded once (ADR 0042).

Revision ID: 0027
Revises: 0026
Create Date: 2026-12-08 01:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0027"
down_revision = "0026"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "station_delivery",
        sa.Column("station_id", sa.String(length=48), nullable=False),
        sa.Column("delivery", sa.String(length=16), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("station_id"),
    )
    op.create_table(
        "integration_events",
        sa.Column("station_id", sa.String(length=48), nullable=False),
        sa.Column("message_id", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=40), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("station_id", "message_id"),
    )


def downgrade() -> None:
    op.drop_table("integration_events")
    op.drop_table("station_delivery")
