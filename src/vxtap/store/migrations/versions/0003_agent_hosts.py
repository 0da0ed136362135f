"""enrolled agent hosts and their reported status

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "agent_hosts",
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("ak", sa.String(length=64), nullable=False),
        sa.Column("enrolled_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("project_id", "host", name=op.f("pk_agent_hosts")),
        sa.UniqueConstraint("ak", name="uq_agent_hosts_ak"),
    )
    op.create_table(
        "host_status",
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("agent_version", sa.String(length=64), nullable=False),
        sa.Column("applied_revision", sa.String(length=64), nullable=True),
        sa.Column("apply_error", sa.String(length=1024), nullable=True),
        sa.Column("drift_repairs", sa.BigInteger(), nullable=False),
        sa.Column("reported_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("project_id", "host", name=op.f("pk_host_status")),
    )


def downgrade() -> None:
    op.drop_table("host_status")
    op.drop_table("agent_hosts")
