"""per-host desired-state revisions

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Hosts get their row on the first write that concerns them; no row reads as 0.
    op.create_table(
        "host_revisions",
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("project_id", "host", name=op.f("pk_host_revisions")),
    )


def downgrade() -> None:
    op.drop_table("host_revisions")
