"""link budget and site caches: download windows and bandwidth caps per site, bytes sent per
download link, Local Controller publications

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05 21:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sites", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("download_windows", sa.JSON(), server_default="[]", nullable=False)
        )
        batch_op.add_column(sa.Column("bandwidth_limit", sa.BigInteger(), nullable=True))
    op.create_table(
        "download_usage",
        sa.Column("station_id", sa.String(length=48), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=True),
        sa.Column("bytes_sent", sa.BigInteger(), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("first_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("station_id", "request_id", "sha256"),
    )
    with op.batch_alter_table("download_usage", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_download_usage_campaign_id"), ["campaign_id"], unique=False
        )
    op.create_table(
        "site_caches",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("station_id", sa.String(length=48), nullable=False),
        sa.Column("site_id", sa.String(length=48), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("md5", sa.String(length=32), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("locations", sa.JSON(), nullable=False),
        sa.Column("reason", sa.String(length=300), nullable=True),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("site_caches", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_site_caches_site_id"), ["site_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_site_caches_station_id"), ["station_id"], unique=False)
        batch_op.create_index("ux_site_caches_station_file", ["station_id", "sha256"], unique=True)


def downgrade() -> None:
    op.drop_table("site_caches")
    op.drop_table("download_usage")
    with op.batch_alter_table("sites", schema=None) as batch_op:
        batch_op.drop_column("bandwidth_limit")
        batch_op.drop_column("download_windows")
