"""per-session counters of copies a target group could not place (no healthy member)

Revision ID: 0007_unplaced_counters
Revises: 0006_target_groups
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_unplaced_counters"
down_revision = "0006_target_groups"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Earlier reports had none: 0 until the host reports again.
    for name in ("unplaced_packets", "unplaced_bytes"):
        op.add_column(
            "counters", sa.Column(name, sa.BigInteger(), server_default="0", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("counters") as batch:
        batch.drop_column("unplaced_bytes")
        batch.drop_column("unplaced_packets")
