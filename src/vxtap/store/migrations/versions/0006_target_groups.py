"""target groups: sessions that mirror to a group of collector ports (docs/elb.md)

Revision ID: 0006_target_groups
Revises: 0005
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_target_groups"
down_revision = "0005"
branch_labels = None
depends_on = None

_SESSION_TARGET = (
    "(target_type = 'eni' AND target_port_id = target_id AND target_group_id IS NULL)"
    " OR (target_type = 'elb' AND target_group_id = target_id AND target_port_id IS NULL)"
)


def _sources_kept() -> list[dict[str, object]]:
    """SQLite rebuilds `sessions` to change its foreign keys; with foreign keys on (they
    cannot be turned off inside the upgrade's transaction) dropping the old table deletes
    the sources through their ON DELETE CASCADE. Keep them to put them back."""
    if op.get_bind().dialect.name != "sqlite":
        return []
    rows = op.get_bind().execute(sa.text("SELECT * FROM session_sources")).mappings()
    return [dict(row) for row in rows]


def _sources_restored(rows: list[dict[str, object]]) -> None:
    if not rows:
        return
    table = sa.table("session_sources", *(sa.column(name) for name in rows[0]))
    op.bulk_insert(table, rows)


def upgrade() -> None:
    op.create_table(
        "target_groups",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("description", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_target_groups")),
        sa.UniqueConstraint("project_id", "id", name="uq_target_groups_project_id"),
    )
    with op.batch_alter_table("target_groups") as batch:
        batch.create_index(batch.f("ix_target_groups_project_id"), ["project_id"], unique=False)

    op.create_table(
        "target_group_members",
        sa.Column("group_id", sa.String(length=36), nullable=False),
        sa.Column("port_id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("healthy", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("last_heartbeat", sa.DateTime(), nullable=True),
        sa.CheckConstraint("number BETWEEN 0 AND 255", name="ck_members_number"),
        sa.ForeignKeyConstraint(
            ["project_id", "group_id"],
            ["target_groups.project_id", "target_groups.id"],
            name="fk_members_group",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["project_id", "port_id"],
            ["ports.project_id", "ports.id"],
            name="fk_members_port",
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("group_id", "port_id", name=op.f("pk_target_group_members")),
        sa.UniqueConstraint("group_id", "number", name="uq_members_number"),
    )
    with op.batch_alter_table("target_group_members") as batch:
        batch.create_index(batch.f("ix_target_group_members_port_id"), ["port_id"], unique=False)

    # Every existing session targets a port.
    sources = _sources_kept()
    with op.batch_alter_table("sessions") as batch:
        batch.alter_column(
            "target_type",
            existing_type=sa.String(length=8),
            server_default="eni",
            existing_nullable=False,
        )
        batch.add_column(sa.Column("target_port_id", sa.String(length=36), nullable=True))
        batch.add_column(sa.Column("target_group_id", sa.String(length=36), nullable=True))
    op.execute("UPDATE sessions SET target_port_id = target_id")
    with op.batch_alter_table("sessions") as batch:
        batch.drop_constraint("fk_sessions_target", type_="foreignkey")
        batch.create_foreign_key(
            "fk_sessions_target",
            "ports",
            ["project_id", "target_port_id"],
            ["project_id", "id"],
            ondelete="RESTRICT",
        )
        batch.create_foreign_key(
            "fk_sessions_target_group",
            "target_groups",
            ["project_id", "target_group_id"],
            ["project_id", "id"],
            ondelete="RESTRICT",
        )
        batch.create_check_constraint("ck_sessions_target", _SESSION_TARGET)
        batch.create_index(batch.f("ix_sessions_target_port_id"), ["target_port_id"], unique=False)
        batch.create_index(
            batch.f("ix_sessions_target_group_id"), ["target_group_id"], unique=False
        )
    _sources_restored(sources)

    with op.batch_alter_table("counters") as batch:
        batch.alter_column(
            "object_id",
            existing_type=sa.String(length=36),
            type_=sa.String(length=73),
            existing_nullable=False,
        )
        batch.drop_constraint("ck_counters_kind", type_="check")
        batch.create_check_constraint("ck_counters_kind", "kind IN ('session', 'rule', 'member')")


def downgrade() -> None:
    op.execute("DELETE FROM counters WHERE kind = 'member'")
    with op.batch_alter_table("counters") as batch:
        batch.drop_constraint("ck_counters_kind", type_="check")
        batch.create_check_constraint("ck_counters_kind", "kind IN ('session', 'rule')")
        batch.alter_column(
            "object_id",
            existing_type=sa.String(length=73),
            type_=sa.String(length=36),
            existing_nullable=False,
        )
    # Sessions that mirror to a group have no port target to go back to.
    op.execute("DELETE FROM sessions WHERE target_type = 'elb'")
    sources = _sources_kept()
    with op.batch_alter_table("sessions") as batch:
        batch.drop_index(batch.f("ix_sessions_target_group_id"))
        batch.drop_index(batch.f("ix_sessions_target_port_id"))
        batch.drop_constraint("ck_sessions_target", type_="check")
        batch.drop_constraint("fk_sessions_target_group", type_="foreignkey")
        batch.drop_constraint("fk_sessions_target", type_="foreignkey")
        batch.create_foreign_key(
            "fk_sessions_target",
            "ports",
            ["project_id", "target_id"],
            ["project_id", "id"],
            ondelete="RESTRICT",
        )
        batch.drop_column("target_group_id")
        batch.drop_column("target_port_id")
        batch.alter_column(
            "target_type",
            existing_type=sa.String(length=8),
            server_default=None,
            existing_nullable=False,
        )
    _sources_restored(sources)
    op.drop_table("target_group_members")
    op.drop_table("target_groups")
