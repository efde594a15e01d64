"""station and anonymous writes bounded (issue 26, ADR 0027): when the CSMS asked a station
for a CSR, and the per-address audit window of failed operator logins

``stations.certificate_requested_at`` is set when the CSMS sends
TriggerMessage(SignChargingStationCertificate) and cleared by the one CSR it signs for it.
``login_throttle`` rows of addresses carry the open window: its start, the failures and the
refusals while locked counted in it, and the first usernames tried.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 06:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("stations", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("certificate_requested_at", sa.DateTime(timezone=True), nullable=True)
        )
    with op.batch_alter_table("login_throttle", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("window_started_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("window_failures", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("window_refused", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("window_usernames", sa.JSON(), nullable=False, server_default="[]")
        )


def downgrade() -> None:
    with op.batch_alter_table("login_throttle", schema=None) as batch_op:
        batch_op.drop_column("window_usernames")
        batch_op.drop_column("window_refused")
        batch_op.drop_column("window_failures")
        batch_op.drop_column("window_started_at")
    with op.batch_alter_table("stations", schema=None) as batch_op:
        batch_op.drop_column("certificate_requested_at")
