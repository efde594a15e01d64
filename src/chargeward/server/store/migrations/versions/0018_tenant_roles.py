"""tenant-isolated repository: the tenant roles a proposal changes, and each approval's
signatures over them (ADR 0026)

Proposals and approvals made before have none (a repository without tenant roles).

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07 06:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("proposals", schema=None) as batch_op:
        batch_op.add_column(sa.Column("roles_json", sa.JSON(), nullable=True))
    with op.batch_alter_table("approvals", schema=None) as batch_op:
        batch_op.add_column(sa.Column("role_signatures", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("approvals", schema=None) as batch_op:
        batch_op.drop_column("role_signatures")
    with op.batch_alter_table("proposals", schema=None) as batch_op:
        batch_op.drop_column("roles_json")
