"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "filters",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("description", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_filters")),
        sa.UniqueConstraint("project_id", "id", name="uq_filters_project_id"),
    )
    with op.batch_alter_table("filters", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_filters_project_id"), ["project_id"], unique=False)

    op.create_table(
        "host_reports",
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("reported_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("project_id", "host", name=op.f("pk_host_reports")),
    )
    op.create_table(
        "ports",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("device", sa.String(length=64), nullable=False),
        sa.Column("mac", sa.String(length=17), nullable=True),
        sa.Column("ipv4", sa.JSON(), nullable=False),
        sa.Column("ipv6", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ports")),
        sa.UniqueConstraint("project_id", "host", "device", name="uq_ports_host_device"),
        sa.UniqueConstraint("project_id", "id", name="uq_ports_project_id"),
    )
    with op.batch_alter_table("ports", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_ports_project_id"), ["project_id"], unique=False)

    op.create_table(
        "counters",
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=7), nullable=False),
        sa.Column("object_id", sa.String(length=36), nullable=False),
        sa.Column("packets", sa.BigInteger(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("kind IN ('session', 'rule')", name="ck_counters_kind"),
        sa.ForeignKeyConstraint(
            ["project_id", "host"],
            ["host_reports.project_id", "host_reports.host"],
            name="fk_counters_host",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "project_id", "host", "kind", "object_id", name=op.f("pk_counters")
        ),
    )
    op.create_table(
        "rules",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("filter_id", sa.String(length=36), nullable=False),
        sa.Column("direction", sa.String(length=7), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(length=6), nullable=False),
        sa.Column("ethertype", sa.String(length=4), nullable=False),
        sa.Column("protocol", sa.String(length=6), nullable=False),
        sa.Column("source_cidr_block", sa.String(length=64), nullable=True),
        sa.Column("destination_cidr_block", sa.String(length=64), nullable=True),
        sa.Column("source_port_range", sa.String(length=11), nullable=True),
        sa.Column("destination_port_range", sa.String(length=11), nullable=True),
        sa.Column("description", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("direction IN ('ingress', 'egress')", name="ck_rules_direction"),
        sa.CheckConstraint("priority BETWEEN 1 AND 65535", name="ck_rules_priority"),
        sa.ForeignKeyConstraint(
            ["project_id", "filter_id"],
            ["filters.project_id", "filters.id"],
            name="fk_rules_filter",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rules")),
        sa.UniqueConstraint("filter_id", "direction", "priority", name="uq_rules_priority"),
    )
    with op.batch_alter_table("rules", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_rules_filter_id"), ["filter_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_rules_project_id"), ["project_id"], unique=False)

    op.create_table(
        "sessions",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("description", sa.String(length=255), nullable=False),
        sa.Column("filter_id", sa.String(length=36), nullable=False),
        sa.Column("target_id", sa.String(length=36), nullable=False),
        sa.Column("target_type", sa.String(length=8), nullable=False),
        sa.Column("virtual_network_id", sa.Integer(), nullable=False),
        sa.Column("packet_length", sa.Integer(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("type", sa.String(length=8), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("packet_length BETWEEN 1 AND 1460", name="ck_sessions_packet_length"),
        sa.CheckConstraint("priority BETWEEN 1 AND 32766", name="ck_sessions_priority"),
        sa.CheckConstraint(
            "virtual_network_id BETWEEN 0 AND 16777215", name="ck_sessions_virtual_network_id"
        ),
        sa.ForeignKeyConstraint(
            ["project_id", "filter_id"],
            ["filters.project_id", "filters.id"],
            name="fk_sessions_filter",
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["project_id", "target_id"],
            ["ports.project_id", "ports.id"],
            name="fk_sessions_target",
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sessions")),
        sa.UniqueConstraint("id", "priority", "target_id", name="uq_sessions_id_priority_target"),
    )
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sessions_filter_id"), ["filter_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_sessions_project_id"), ["project_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_sessions_target_id"), ["target_id"], unique=False)

    op.create_table(
        "session_sources",
        sa.Column("session_id", sa.String(length=36), nullable=False),
        sa.Column("port_id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("target_id", sa.String(length=36), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.CheckConstraint("port_id <> target_id", name="ck_sources_not_target"),
        sa.CheckConstraint("position BETWEEN 1 AND 10", name="ck_sources_position"),
        sa.CheckConstraint("slot BETWEEN 1 AND 3", name="ck_sources_slot"),
        sa.ForeignKeyConstraint(
            ["project_id", "port_id"],
            ["ports.project_id", "ports.id"],
            name="fk_sources_port",
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["session_id", "priority", "target_id"],
            ["sessions.id", "sessions.priority", "sessions.target_id"],
            name="fk_sources_session",
            onupdate="CASCADE",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("session_id", "port_id", name=op.f("pk_session_sources")),
        sa.UniqueConstraint("port_id", "priority", name="uq_sources_port_priority"),
        sa.UniqueConstraint("port_id", "slot", name="uq_sources_port_slot"),
        sa.UniqueConstraint("session_id", "position", name="uq_sources_session_position"),
    )


def downgrade() -> None:
    op.drop_table("session_sources")
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sessions_target_id"))
        batch_op.drop_index(batch_op.f("ix_sessions_project_id"))
        batch_op.drop_index(batch_op.f("ix_sessions_filter_id"))

    op.drop_table("sessions")
    with op.batch_alter_table("rules", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_rules_project_id"))
        batch_op.drop_index(batch_op.f("ix_rules_filter_id"))

    op.drop_table("rules")
    op.drop_table("counters")
    with op.batch_alter_table("ports", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ports_project_id"))

    op.drop_table("ports")
    op.drop_table("host_reports")
    with op.batch_alter_table("filters", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_filters_project_id"))

    op.drop_table("filters")
