"""proxy mode's settings per station and per site, and stored upstream credentials (issue 31)

``station_upstream`` and ``site_upstream``: the upstream CSMS's URL template
(``ws[s]://.../{stationId}``) and the firmware policy for its firmware commands (``relay``,
``refuse``, ``approved-only``), NULL for the next level's (station, then site, then the
server's ``--upstream`` options).  ``station_upstream.sealed_password`` is the station's
upstream Basic auth password sealed with AES-256-GCM under the key file in the server's data
directory (``upstream-credentials.key``); it is never returned by the API (ADR 0040).  Rows
go with their station or site (ON DELETE CASCADE).

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-08 01:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "station_upstream",
        sa.Column("station_id", sa.String(length=48), nullable=False),
        sa.Column("url_template", sa.String(length=512), nullable=True),
        sa.Column("firmware_policy", sa.String(length=16), nullable=True),
        sa.Column("username", sa.String(length=64), nullable=True),
        sa.Column("sealed_password", sa.LargeBinary(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["station_id"], ["stations.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("station_id"),
    )
    op.create_table(
        "site_upstream",
        sa.Column("site_id", sa.String(length=48), nullable=False),
        sa.Column("url_template", sa.String(length=512), nullable=True),
        sa.Column("firmware_policy", sa.String(length=16), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("site_id"),
    )


def downgrade() -> None:
    op.drop_table("site_upstream")
    op.drop_table("station_upstream")
