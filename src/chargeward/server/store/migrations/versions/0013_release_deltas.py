"""release deltas: binary deltas from images the fleet runs to a release's images

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05 16:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "release_deltas",
        sa.Column("release_id", sa.String(length=64), nullable=False),
        sa.Column("component", sa.String(length=32), nullable=False),
        sa.Column("from_version", sa.String(length=50), nullable=False),
        sa.Column("from_sha256", sa.String(length=64), nullable=False),
        sa.Column("from_length", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("length", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["release_id"], ["releases.id"]),
        sa.PrimaryKeyConstraint("release_id", "component", "from_version"),
    )


def downgrade() -> None:
    op.drop_table("release_deltas")
