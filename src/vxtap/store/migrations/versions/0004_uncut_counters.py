"""per-session counters of copies not sent because they could not be cut

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Earlier reports had none: 0 until the host reports again.
    for name in ("uncut_packets", "uncut_bytes"):
        op.add_column(
            "counters", sa.Column(name, sa.BigInteger(), server_default="0", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("counters") as batch:
        batch.drop_column("uncut_bytes")
        batch.drop_column("uncut_packets")
