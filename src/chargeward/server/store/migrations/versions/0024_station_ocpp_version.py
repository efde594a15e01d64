"""OCPP 1.6J stations: protocol, legacy firmware update mark, signed-update evidence (issue 30)

``stations.ocpp_version`` is the subprotocol of the station's last connection (``1.6`` or
``2.0.1``; NULL before its first connection since this revision).
``stations.legacy_firmware_update`` is set only by an operator: the station gets plain OCPP 1.6
UpdateFirmware (no signature) instead of the Security Whitepaper's SignedUpdateFirmware.
``stations.signed_update_support`` is what the station has shown: true once it used a
whitepaper message (then it never gets plain UpdateFirmware), false once it refused
SignedUpdateFirmware as not implemented, NULL while unknown (ADR 0039).

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-08 00:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("stations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("ocpp_version", sa.String(length=8), nullable=True))
        batch_op.add_column(
            sa.Column(
                "legacy_firmware_update",
                sa.Boolean(),
                nullable=False,
                server_default=sa.false(),
            )
        )
        batch_op.add_column(sa.Column("signed_update_support", sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("stations", schema=None) as batch_op:
        batch_op.drop_column("signed_update_support")
        batch_op.drop_column("legacy_firmware_update")
        batch_op.drop_column("ocpp_version")
