"""station certificates: the issuer of each station's current certificate, the pending one of
a renewal, and the revoked or superseded ones the charger CA's CRL lists (ADR 0022)

A station upgraded from an earlier version keeps its recorded serial as its current
certificate; the issuer is filled in at its next login with that certificate.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 03:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("stations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("certificate_issuer", sa.String(length=64), nullable=True))
        batch_op.add_column(
            sa.Column("pending_certificate_serial", sa.String(length=40), nullable=True)
        )
        batch_op.add_column(
            sa.Column("pending_certificate_issuer", sa.String(length=64), nullable=True)
        )
        batch_op.add_column(
            sa.Column("pending_certificate_expires_at", sa.DateTime(timezone=True), nullable=True)
        )
    op.create_table(
        "revoked_station_certificates",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("station_id", sa.String(length=48), nullable=False),
        sa.Column("issuer", sa.String(length=64), nullable=False),
        sa.Column("serial", sa.String(length=40), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reason", sa.String(length=30), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_by", sa.String(length=100), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("revoked_station_certificates", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_revoked_station_certificates_station_id"), ["station_id"], unique=False
        )
        batch_op.create_index("ux_revoked_station_certificates", ["issuer", "serial"], unique=True)


def downgrade() -> None:
    op.drop_table("revoked_station_certificates")
    with op.batch_alter_table("stations", schema=None) as batch_op:
        batch_op.drop_column("pending_certificate_expires_at")
        batch_op.drop_column("pending_certificate_issuer")
        batch_op.drop_column("pending_certificate_serial")
        batch_op.drop_column("certificate_issuer")
