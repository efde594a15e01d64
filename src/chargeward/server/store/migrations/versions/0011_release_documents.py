"""release documents: the uploaded bundle's digest; SBOM, vulnerability report, VEX and
provenance per release; the SBOM's components, indexed by name, for fleet exposure queries

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 08:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("releases", schema=None) as batch_op:
        batch_op.add_column(sa.Column("bundle_sha256", sa.String(length=64), nullable=True))
    op.create_table(
        "release_documents",
        sa.Column("release_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("added_by", sa.String(length=100), nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["release_id"], ["releases.id"]),
        sa.PrimaryKeyConstraint("release_id", "name"),
    )
    op.create_table(
        "release_components",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("release_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("version", sa.String(length=100), nullable=False),
        sa.Column("purl", sa.String(length=500), nullable=True),
        sa.ForeignKeyConstraint(["release_id"], ["releases.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_release_components_release_id", "release_components", ["release_id"])
    op.create_index("ix_release_components_name", "release_components", ["name"])


def downgrade() -> None:
    op.drop_index("ix_release_components_name", table_name="release_components")
    op.drop_index("ix_release_components_release_id", table_name="release_components")
    op.drop_table("release_components")
    op.drop_table("release_documents")
    with op.batch_alter_table("releases", schema=None) as batch_op:
        batch_op.drop_column("bundle_sha256")
