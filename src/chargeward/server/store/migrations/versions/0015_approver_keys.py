"""approver keys: which operator account holds each TUF targets (approver) key

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-12 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "approver_keys",
        sa.Column("keyid", sa.String(length=64), nullable=False),
        sa.Column("account", sa.String(length=100), nullable=False),
        sa.Column("label", sa.String(length=100), nullable=False),
        sa.Column("root_version", sa.Integer(), nullable=False),
        sa.Column("registered_by", sa.String(length=100), nullable=False),
        sa.Column("registered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("keyid"),
    )
    with op.batch_alter_table("approver_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_approver_keys_account"), ["account"], unique=False)


def downgrade() -> None:
    op.drop_table("approver_keys")
