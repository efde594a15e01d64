"""sessions and principals: a pending TOTP secret per user, for enrolment by the user (ADR 0028)

A privileged account without TOTP (promoted, or its TOTP reset by an administrator) logs in
with its password to a session that may only enrol: the server stores the secret it showed
here until the user confirms it with a code.  Existing accounts have none pending.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07 06:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("totp_pending_secret", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("totp_pending_secret")
