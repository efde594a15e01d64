"""reported version strings: how a release's stations report its version (issue 29, ADR 0037)

``releases.reported_versions`` keeps what the uploader declared, per hardware model, as the
strings and the pattern its stations report in BootNotification firmwareVersion (canonical
JSON); NULL, as for every older release, means the release's own version only.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-07 23:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("releases", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reported_versions", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("releases", schema=None) as batch_op:
        batch_op.drop_column("reported_versions")
