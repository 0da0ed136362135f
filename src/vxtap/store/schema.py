"""The database schema: SQLAlchemy 2 declarative tables.

Every uniqueness and quota rule of docs/behaviour.md §1.6 is a constraint here, so that
concurrent requests (threads of one server, or several servers on one
PostgreSQL) cannot break it; the store's Python checks only exist to word
the error nicely. How the rules map to constraints:

- rule priority unique per filter and direction: `uq_rules_priority`;
- session priority unique among sessions sharing a source, and a source and the
  target of one session are different ports: `session_sources` copies the
  session's priority and target id through a composite foreign key with
  ON UPDATE CASCADE, so `uq_sources_port_priority` and `ck_sources_not_target`
  see every change of the session row;
- a port is a source of at most 3 sessions: each (port, session) pair takes one
  of the port's `slot`s 1-3 (`uq_sources_port_slot`, `ck_sources_slot`);
- at most 10 sources per session: `position` 1-10, unique per session;
- references stay inside one project: foreign keys include `project_id`;
- a filter or port still named by a session cannot be deleted: ON DELETE RESTRICT;
- a session's target is a port (`target_type` 'eni') or a target group ('elb'):
  `target_id` names either (the sources' composite key copies it), and exactly one of
  `target_port_id`/`target_group_id` repeats it with a foreign key of its kind
  (`ck_sessions_target`), so a port or group a session targets cannot be deleted;
- a group's member numbers are 0-255 and unique in the group, a port joins a group once,
  and a port that is a member cannot be deleted (`fk_members_port`).

Any change here needs a new Alembic migration in `vxtap/store/migrations`
(tests/store compares the migrated schema with this one).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKeyConstraint,
    Integer,
    MetaData,
    String,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, validates

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "pk": "pk_%(table_name)s",
}

ID = String(36)
PROJECT = String(64)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class FilterRow(Base):
    __tablename__ = "filters"
    __table_args__ = (UniqueConstraint("project_id", "id", name="uq_filters_project_id"),)

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    project_id: Mapped[str] = mapped_column(PROJECT, index=True)
    name: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)

    # A filter's rules go with it (docs/control-plane.md). Without the delete cascade the
    # ORM would detach the loaded rules by setting their filter to NULL, which the
    # NOT NULL columns refuse; the database's ON DELETE CASCADE does the same for rows
    # not loaded.
    rules: Mapped[list[RuleRow]] = relationship(
        back_populates="filter",
        order_by="(RuleRow.direction, RuleRow.priority)",
        lazy="selectin",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )


class RuleRow(Base):
    __tablename__ = "rules"
    __table_args__ = (
        ForeignKeyConstraint(
            ["project_id", "filter_id"],
            ["filters.project_id", "filters.id"],
            name="fk_rules_filter",
            ondelete="CASCADE",
        ),
        UniqueConstraint("filter_id", "direction", "priority", name="uq_rules_priority"),
        CheckConstraint("priority BETWEEN 1 AND 65535", name="ck_rules_priority"),
        CheckConstraint("direction IN ('ingress', 'egress')", name="ck_rules_direction"),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    project_id: Mapped[str] = mapped_column(PROJECT, index=True)
    filter_id: Mapped[str] = mapped_column(ID, index=True)
    direction: Mapped[str] = mapped_column(String(7))
    priority: Mapped[int] = mapped_column(Integer)
    action: Mapped[str] = mapped_column(String(6))
    ethertype: Mapped[str] = mapped_column(String(4))
    protocol: Mapped[str] = mapped_column(String(6))
    source_cidr_block: Mapped[str | None] = mapped_column(String(64))
    destination_cidr_block: Mapped[str | None] = mapped_column(String(64))
    source_port_range: Mapped[str | None] = mapped_column(String(11))
    destination_port_range: Mapped[str | None] = mapped_column(String(11))
    description: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)

    filter: Mapped[FilterRow] = relationship(back_populates="rules")


class PortRow(Base):
    __tablename__ = "ports"
    __table_args__ = (
        UniqueConstraint("project_id", "host", "device", name="uq_ports_host_device"),
        UniqueConstraint("project_id", "id", name="uq_ports_project_id"),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    project_id: Mapped[str] = mapped_column(PROJECT, index=True)
    host: Mapped[str] = mapped_column(String(255))
    device: Mapped[str] = mapped_column(String(64))
    mac: Mapped[str | None] = mapped_column(String(17))
    ipv4: Mapped[list[str]] = mapped_column(JSON)
    ipv6: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class SessionRow(Base):
    __tablename__ = "sessions"
    __table_args__ = (
        ForeignKeyConstraint(
            ["project_id", "filter_id"],
            ["filters.project_id", "filters.id"],
            name="fk_sessions_filter",
            ondelete="RESTRICT",
        ),
        ForeignKeyConstraint(
            ["project_id", "target_port_id"],
            ["ports.project_id", "ports.id"],
            name="fk_sessions_target",
            ondelete="RESTRICT",
        ),
        ForeignKeyConstraint(
            ["project_id", "target_group_id"],
            ["target_groups.project_id", "target_groups.id"],
            name="fk_sessions_target_group",
            ondelete="RESTRICT",
        ),
        CheckConstraint(
            "(target_type = 'eni' AND target_port_id = target_id AND target_group_id IS NULL)"
            " OR (target_type = 'elb' AND target_group_id = target_id"
            " AND target_port_id IS NULL)",
            name="ck_sessions_target",
        ),
        # Target of the composite foreign key from session_sources.
        UniqueConstraint("id", "priority", "target_id", name="uq_sessions_id_priority_target"),
        CheckConstraint("priority BETWEEN 1 AND 32766", name="ck_sessions_priority"),
        CheckConstraint(
            "virtual_network_id BETWEEN 0 AND 16777215", name="ck_sessions_virtual_network_id"
        ),
        CheckConstraint("packet_length BETWEEN 1 AND 1460", name="ck_sessions_packet_length"),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    project_id: Mapped[str] = mapped_column(PROJECT, index=True)
    name: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(String(255))
    filter_id: Mapped[str] = mapped_column(ID, index=True)
    target_id: Mapped[str] = mapped_column(ID, index=True)
    target_type: Mapped[str] = mapped_column(String(8), server_default="eni")
    # Copies of target_id by kind, set whenever target_id or target_type is (`_typed`).
    target_port_id: Mapped[str | None] = mapped_column(ID, index=True)
    target_group_id: Mapped[str | None] = mapped_column(ID, index=True)
    virtual_network_id: Mapped[int] = mapped_column(Integer)
    packet_length: Mapped[int] = mapped_column(Integer)
    priority: Mapped[int] = mapped_column(Integer)
    enabled: Mapped[bool] = mapped_column(Boolean)
    type: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)

    @validates("target_id", "target_type")
    def _typed(self, key: str, value: str) -> str:
        """Keep the typed target columns in step with target_id and target_type: the
        store sets only those two, and the database checks the copy
        (`ck_sessions_target`). A validator, not a flush event, so that Core inserts of
        the row's attributes (`common.insert_row`) carry them too."""
        target_id = value if key == "target_id" else self.__dict__.get("target_id")
        target_type = value if key == "target_type" else self.__dict__.get("target_type")
        is_group = target_type == "elb"
        self.target_group_id = target_id if is_group else None
        self.target_port_id = None if is_group else target_id
        return value

    sources: Mapped[list[SourceRow]] = relationship(
        back_populates="session",
        order_by="SourceRow.position",
        lazy="selectin",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )


class TargetGroupRow(Base):
    """A group of collector ports a session can mirror to (docs/elb.md)."""

    __tablename__ = "target_groups"
    __table_args__ = (UniqueConstraint("project_id", "id", name="uq_target_groups_project_id"),)

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    project_id: Mapped[str] = mapped_column(PROJECT, index=True)
    name: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)

    members: Mapped[list[MemberRow]] = relationship(
        back_populates="group",
        order_by="MemberRow.number",
        lazy="selectin",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )


class MemberRow(Base):
    """One port of one target group, with the number placement tables hold, and its
    health as the server last judged it from collector heartbeats (docs/elb.md)."""

    __tablename__ = "target_group_members"
    __table_args__ = (
        ForeignKeyConstraint(
            ["project_id", "group_id"],
            ["target_groups.project_id", "target_groups.id"],
            name="fk_members_group",
            ondelete="CASCADE",
        ),
        ForeignKeyConstraint(
            ["project_id", "port_id"],
            ["ports.project_id", "ports.id"],
            name="fk_members_port",
            ondelete="RESTRICT",
        ),
        UniqueConstraint("group_id", "number", name="uq_members_number"),
        CheckConstraint("number BETWEEN 0 AND 255", name="ck_members_number"),
    )

    group_id: Mapped[str] = mapped_column(ID, primary_key=True)
    port_id: Mapped[str] = mapped_column(ID, primary_key=True, index=True)
    project_id: Mapped[str] = mapped_column(PROJECT)
    number: Mapped[int] = mapped_column(Integer)
    healthy: Mapped[bool] = mapped_column(Boolean, server_default=false())
    last_heartbeat: Mapped[datetime | None] = mapped_column(DateTime)

    group: Mapped[TargetGroupRow] = relationship(back_populates="members")


class SourceRow(Base):
    """One source port of one session (the association carries the constraint columns)."""

    __tablename__ = "session_sources"
    __table_args__ = (
        ForeignKeyConstraint(
            ["session_id", "priority", "target_id"],
            ["sessions.id", "sessions.priority", "sessions.target_id"],
            name="fk_sources_session",
            ondelete="CASCADE",
            onupdate="CASCADE",
        ),
        ForeignKeyConstraint(
            ["project_id", "port_id"],
            ["ports.project_id", "ports.id"],
            name="fk_sources_port",
            ondelete="RESTRICT",
        ),
        UniqueConstraint("port_id", "priority", name="uq_sources_port_priority"),
        UniqueConstraint("port_id", "slot", name="uq_sources_port_slot"),
        UniqueConstraint("session_id", "position", name="uq_sources_session_position"),
        CheckConstraint("slot BETWEEN 1 AND 3", name="ck_sources_slot"),
        CheckConstraint("position BETWEEN 1 AND 10", name="ck_sources_position"),
        CheckConstraint("port_id <> target_id", name="ck_sources_not_target"),
    )

    session_id: Mapped[str] = mapped_column(ID, primary_key=True)
    port_id: Mapped[str] = mapped_column(ID, primary_key=True)
    project_id: Mapped[str] = mapped_column(PROJECT)
    priority: Mapped[int] = mapped_column(Integer)
    target_id: Mapped[str] = mapped_column(ID)
    slot: Mapped[int] = mapped_column(Integer)
    position: Mapped[int] = mapped_column(Integer)

    session: Mapped[SessionRow] = relationship(back_populates="sources")


class ProjectChangeRow(Base):
    """A project's change counter: bumped in the same transaction by every write that can
    change any host's desired state, so a poll can tell "unchanged" without building it.

    Writers take this row first (an upsert), so the writes of one project serialize on
    it before they lock anything else: no lock-order deadlocks on PostgreSQL.
    """

    __tablename__ = "project_changes"

    project_id: Mapped[str] = mapped_column(PROJECT, primary_key=True)
    counter: Mapped[int] = mapped_column(BigInteger)


class HostRevisionRow(Base):
    """A host's desired-state revision: bumped in the same transaction by every write that
    can change that host's desired state (and no other), so a held request for the host
    is woken, and its state built, only when it may have changed."""

    __tablename__ = "host_revisions"

    project_id: Mapped[str] = mapped_column(PROJECT, primary_key=True)
    host: Mapped[str] = mapped_column(String(255), primary_key=True)
    revision: Mapped[int] = mapped_column(BigInteger)


class HostReportRow(Base):
    """When a host's agent last pushed counters."""

    __tablename__ = "host_reports"

    project_id: Mapped[str] = mapped_column(PROJECT, primary_key=True)
    host: Mapped[str] = mapped_column(String(255), primary_key=True)
    reported_at: Mapped[datetime] = mapped_column(DateTime)


class CounterRow(Base):
    """The latest totals one host reported for one session, rule or (session, member)."""

    __tablename__ = "counters"
    __table_args__ = (
        ForeignKeyConstraint(
            ["project_id", "host"],
            ["host_reports.project_id", "host_reports.host"],
            name="fk_counters_host",
            ondelete="CASCADE",
        ),
        CheckConstraint("kind IN ('session', 'rule', 'member')", name="ck_counters_kind"),
    )

    project_id: Mapped[str] = mapped_column(PROJECT, primary_key=True)
    host: Mapped[str] = mapped_column(String(255), primary_key=True)
    kind: Mapped[str] = mapped_column(String(7), primary_key=True)
    # Members: "<session id>/<port id>".
    object_id: Mapped[str] = mapped_column(String(73), primary_key=True)
    packets: Mapped[int] = mapped_column(BigInteger)
    bytes: Mapped[int] = mapped_column(BigInteger)
    # Sessions: copies not sent because they could not be cut (rules: 0).
    uncut_packets: Mapped[int] = mapped_column(BigInteger, server_default="0")
    uncut_bytes: Mapped[int] = mapped_column(BigInteger, server_default="0")
    # Sessions whose target is a group: copies dropped for want of a healthy member.
    unplaced_packets: Mapped[int] = mapped_column(BigInteger, server_default="0")
    unplaced_bytes: Mapped[int] = mapped_column(BigInteger, server_default="0")


class AgentHostRow(Base):
    """A host enrolled at run time (`vxtap host add`): its agent's access key.

    No secret is stored: the agent's secret key is derived from the access key and the
    server's agent signing key, a file outside the database (`vxtap.enrolment`), so a
    copy of the database hands out no working credential. Deleting the row revokes the
    key on every server process at once (each agent request looks it up).
    """

    __tablename__ = "agent_hosts"
    __table_args__ = (UniqueConstraint("ak", name="uq_agent_hosts_ak"),)

    project_id: Mapped[str] = mapped_column(PROJECT, primary_key=True)
    host: Mapped[str] = mapped_column(String(255), primary_key=True)
    ak: Mapped[str] = mapped_column(String(64))
    enrolled_at: Mapped[datetime] = mapped_column(DateTime)


class HostStatusRow(Base):
    """What a host's agent last said it applied (`PUT .../hosts/{host}/status`)."""

    __tablename__ = "host_status"

    project_id: Mapped[str] = mapped_column(PROJECT, primary_key=True)
    host: Mapped[str] = mapped_column(String(255), primary_key=True)
    agent_version: Mapped[str] = mapped_column(String(64))
    applied_revision: Mapped[str | None] = mapped_column(String(64))
    apply_error: Mapped[str | None] = mapped_column(String(1024))
    drift_repairs: Mapped[int] = mapped_column(BigInteger)
    reported_at: Mapped[datetime] = mapped_column(DateTime)
