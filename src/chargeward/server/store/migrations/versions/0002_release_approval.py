"""release approval: proposals, approvals, release class and customer

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 11:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("releases", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "release_class", sa.String(length=10), nullable=False, server_default="feature"
            )
        )
        batch_op.add_column(sa.Column("customer", sa.String(length=64), nullable=True))
    with op.batch_alter_table("stations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("available_update", sa.JSON(), nullable=True))
    op.create_table(
        "proposals",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("release_id", sa.String(length=64), nullable=True),
        sa.Column("base_version", sa.Integer(), nullable=False),
        sa.Column("metadata_json", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("targets_version", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["release_id"], ["releases.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("proposals", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_proposals_release_id"), ["release_id"], unique=False)
    op.create_table(
        "approvals",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("proposal_id", sa.Integer(), nullable=False),
        sa.Column("keyid", sa.String(length=64), nullable=False),
        sa.Column("owner", sa.String(length=100), nullable=False),
        sa.Column("signature", sa.Text(), nullable=False),
        sa.Column("submitted_by", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["proposal_id"], ["proposals.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("approvals", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_approvals_proposal_id"), ["proposal_id"], unique=False)


def downgrade() -> None:
    op.drop_table("approvals")
    op.drop_table("proposals")
    with op.batch_alter_table("stations", schema=None) as batch_op:
        batch_op.drop_column("available_update")
    with op.batch_alter_table("releases", schema=None) as batch_op:
        batch_op.drop_column("customer")
        batch_op.drop_column("release_class")
