"""vendors' own signed firmware: vendor roots per model, vendor releases (issue 31, ADR 0041)

``vendor_roots``: a vendor's manufacturer root certificate registered for one hardware model
(several per model while a vendor rotates its root).  ``vendor_releases``: the releases whose
image a vendor signed, dispatched with the vendor's signature and certificate as shipped; a
release listed here has provenance ``vendor-supplied``.

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-08 01:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0026"
down_revision = "0025"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "vendor_roots",
        sa.Column("model", sa.String(length=20), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("certificate_pem", sa.Text(), nullable=False),
        sa.Column("subject", sa.String(length=300), nullable=False),
        sa.Column("not_after", sa.DateTime(timezone=True), nullable=False),
        sa.Column("added_by", sa.String(length=100), nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("model", "fingerprint"),
    )
    op.create_table(
        "vendor_releases",
        sa.Column("release_id", sa.String(length=64), nullable=False),
        sa.Column("root_fingerprint", sa.String(length=64), nullable=False),
        sa.Column("certificate_fingerprint", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["release_id"], ["releases.id"]),
        sa.PrimaryKeyConstraint("release_id"),
    )


def downgrade() -> None:
    op.drop_table("vendor_releases")
    op.drop_table("vendor_roots")
