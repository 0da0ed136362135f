"""project change counter

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing projects get their row on their first write; no row reads as counter 0.
    op.create_table(
        "project_changes",
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("counter", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("project_id", name=op.f("pk_project_changes")),
    )


def downgrade() -> None:
    op.drop_table("project_changes")
