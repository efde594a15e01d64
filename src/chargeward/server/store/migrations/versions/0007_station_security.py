"""station security: per-station security profile, certificates, password rotation

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-21 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("stations") as batch:
        batch.add_column(
            sa.Column("security_profile", sa.Integer(), nullable=False, server_default="2")
        )
        batch.add_column(
            sa.Column("certificate_expires_at", sa.DateTime(timezone=True), nullable=True)
        )
        # The serial (hex) of the station certificate last seen or issued, and the argon2 hash
        # of a BasicAuthPassword sent with SetVariables whose answer is still outstanding.
        batch.add_column(sa.Column("certificate_serial", sa.String(40), nullable=True))
        batch.add_column(sa.Column("pending_password_hash", sa.String(200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("stations") as batch:
        batch.drop_column("pending_password_hash")
        batch.drop_column("certificate_serial")
        batch.drop_column("certificate_expires_at")
        batch.drop_column("security_profile")
