"""Mirror sessions and their sources over the database: targets, priorities, VNIs
(docs/behaviour.md §1.6); in the caller's transaction. The reads are Core selects.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from vxtap import model
from vxtap.store.common import (
    RowPage,
    bump_change,
    bump_hosts,
    column_matches,
    hosts_showing,
    insert_row,
    new_id,
    owned_row,
    paginate,
    utc_now,
)
from vxtap.store.errors import DuplicatePriority, Invalid, NotFound, QuotaExceeded
from vxtap.store.filters import get_filter
from vxtap.store.ports import get_port
from vxtap.store.schema import SessionRow, SourceRow
from vxtap.store.target_groups import check_no_source_is_member, get_target_group


@dataclass(frozen=True)
class SessionSpec:
    """A new mirror session, in the domain's names (the routes convert the Huawei body)."""

    name: str
    filter_id: str
    sources: tuple[str, ...]
    target_id: str
    target_kind: model.TargetKind
    priority: int
    description: str = ""
    vni: int = model.DEFAULT_VNI
    packet_length: int = model.DEFAULT_PACKET_LENGTH
    enabled: bool = True
    source_kind: str = "eni"


@dataclass(frozen=True)
class SessionChange:
    """What an update sets; None leaves a field as it is (none of them can be cleared).
    Sources change only through add_sources / remove_sources."""

    name: str | None = None
    description: str | None = None
    filter_id: str | None = None
    target_id: str | None = None
    target_kind: model.TargetKind | None = None
    vni: int | None = None
    packet_length: int | None = None
    priority: int | None = None
    enabled: bool | None = None
    source_kind: str | None = None


# SessionChange's fields as SessionRow's columns (the VNI and the source kind are named
# after Huawei's fields in the table).
_CHANGE_COLUMNS = {
    "name": "name",
    "description": "description",
    "filter_id": "filter_id",
    "target_id": "target_id",
    "target_kind": "target_type",
    "vni": "virtual_network_id",
    "packet_length": "packet_length",
    "priority": "priority",
    "enabled": "enabled",
    "source_kind": "type",
}
assert set(_CHANGE_COLUMNS) == {f.name for f in fields(SessionChange)}
# What the desired state shows of a session: a change of these reaches its hosts.
_SHOWN = frozenset(("name", "filter_id", "target_id", "target_kind", "vni", "packet_length",
                    "priority", "enabled"))  # fmt: skip


def get_session(db: Session, project: str, session_id: str) -> SessionRow:
    return owned_row(db, SessionRow, project, session_id, "mirror session", None)


def _check_target(
    db: Session, project: str, kind: model.TargetKind, target_id: str, sources: Iterable[str]
) -> None:
    """The target exists in the project and shares no port with the sources: a port
    ('eni'), or a group with members of which none is a source ('elb', docs/elb.md)."""
    if kind is model.TargetKind.ELB:
        group = get_target_group(db, project, target_id, "traffic_mirror_target_id")
        if not group.members:
            raise Invalid(
                f"traffic_mirror_target_id: target group {target_id} has no members: "
                "add collector ports to it first"
            )
        check_no_source_is_member(db, target_id, sources, "traffic_mirror_target_id")
        return
    get_port(db, project, target_id, "traffic_mirror_target_id")
    if target_id in sources:
        raise Invalid(
            f"traffic_mirror_target_id {target_id} is also a source of this session: "
            "a source and the target of one session must be different ports"
        )


def _check_priority_free(db: Session, session_id: str, priority: int, ports: Iterable[str]) -> None:
    ports = list(ports)
    if not ports:
        return
    clash = db.execute(
        select(SourceRow.port_id, SourceRow.session_id).where(
            SourceRow.port_id.in_(ports),
            SourceRow.priority == priority,
            SourceRow.session_id != session_id,
        )
    ).first()
    if clash is not None:
        raise DuplicatePriority(
            f"priority {priority} is already used by session {clash.session_id}, which shares "
            f"source {clash.port_id}: session priorities are unique among sessions "
            "sharing a source"
        )


def _attach_sources(db: Session, project: str, row: SessionRow, port_ids: Sequence[str]) -> None:
    current = [s.port_id for s in row.sources]
    for port_id in port_ids:
        get_port(db, project, port_id, "traffic_mirror_sources")
        if port_id in current:
            raise Invalid(
                f"traffic_mirror_sources: port {port_id} is already a source of this session"
            )
    if len(current) + len(port_ids) > model.MAX_SOURCES_PER_SESSION:
        raise QuotaExceeded(
            f"traffic_mirror_sources: the session would have {len(current) + len(port_ids)} "
            f"sources; at most {model.MAX_SOURCES_PER_SESSION} are allowed"
        )
    if row.target_type == model.TargetKind.ELB:
        check_no_source_is_member(db, row.target_id, port_ids, "traffic_mirror_sources")
    elif row.target_id in port_ids:
        raise Invalid(
            f"traffic_mirror_sources: port {row.target_id} is this session's target: "
            "a source and the target of one session must be different ports"
        )
    _check_priority_free(db, row.id, row.priority, port_ids)
    used_slots: dict[str, set[int]] = {}
    for port_id, slot in db.execute(
        select(SourceRow.port_id, SourceRow.slot).where(SourceRow.port_id.in_(port_ids))
    ):
        used_slots.setdefault(port_id, set()).add(slot)
    free_positions = sorted(
        set(range(1, model.MAX_SOURCES_PER_SESSION + 1)) - {s.position for s in row.sources}
    )
    for port_id, position in zip(port_ids, free_positions, strict=False):
        slots = set(range(1, model.MAX_SESSIONS_PER_SOURCE + 1)) - used_slots.get(port_id, set())
        if not slots:
            raise QuotaExceeded(
                f"traffic_mirror_sources: port {port_id} is already a source of "
                f"{model.MAX_SESSIONS_PER_SOURCE} sessions, the most a port can be"
            )
        # The columns copied from the session are set here rather than by the ORM at
        # flush: create_session inserts these rows itself.
        row.sources.append(
            SourceRow(
                session_id=row.id,
                port_id=port_id,
                project_id=project,
                priority=row.priority,
                target_id=row.target_id,
                slot=min(slots),
                position=position,
            )
        )


def create_session(db: Session, project: str, spec: SessionSpec) -> SessionRow:
    bump_change(db, project)
    get_filter(db, project, spec.filter_id, "traffic_mirror_filter_id")
    _check_target(db, project, spec.target_kind, spec.target_id, spec.sources)
    now = utc_now()
    row = SessionRow(
        id=new_id(),
        project_id=project,
        name=spec.name,
        description=spec.description,
        filter_id=spec.filter_id,
        target_id=spec.target_id,
        target_type=spec.target_kind.value,
        virtual_network_id=spec.vni,
        packet_length=spec.packet_length,
        priority=spec.priority,
        enabled=spec.enabled,
        type=spec.source_kind,
        created_at=now,
        updated_at=now,
    )
    row.sources = []
    _attach_sources(db, project, row, list(spec.sources))
    insert_row(db, row)
    for source in row.sources:
        insert_row(db, source)
    bump_hosts(db, project, hosts_showing(db, sessions=[row.id]))
    return row


def update_session(db: Session, project: str, session_id: str, change: SessionChange) -> SessionRow:
    bump_change(db, project)
    row = get_session(db, project, session_id)
    changes = {
        column: value.value if isinstance(value, model.TargetKind) else value
        for name, column in _CHANGE_COLUMNS.items()
        if (value := getattr(change, name)) is not None
    }
    sources = [s.port_id for s in row.sources]
    if change.filter_id is not None:
        get_filter(db, project, change.filter_id, "traffic_mirror_filter_id")
    if change.target_id is not None or change.target_kind is not None:
        _check_target(
            db,
            project,
            change.target_kind or model.TargetKind(row.target_type),
            change.target_id or row.target_id,
            sources,
        )
    if change.priority not in (None, row.priority):
        _check_priority_free(db, row.id, change.priority, sources)
    shown = {_CHANGE_COLUMNS[name] for name in _SHOWN}
    if any(getattr(row, column) != value for column, value in changes.items() if column in shown):
        bump_hosts(db, project, hosts_showing(db, sessions=[row.id]))
    for column, value in changes.items():
        setattr(row, column, value)
    row.updated_at = utc_now()
    db.flush()
    # The database cascaded priority/target into session_sources; the loaded copies are
    # stale but never written back (unchanged attributes are not flushed).
    return row


def add_sources(db: Session, project: str, session_id: str, port_ids: Sequence[str]) -> SessionRow:
    bump_change(db, project)
    row = get_session(db, project, session_id)
    _attach_sources(db, project, row, port_ids)
    row.updated_at = utc_now()
    db.flush()
    bump_hosts(db, project, hosts_showing(db, sessions=[row.id]))
    return row


def remove_sources(
    db: Session, project: str, session_id: str, port_ids: Sequence[str]
) -> SessionRow:
    bump_change(db, project)
    row = get_session(db, project, session_id)
    current = {s.port_id: s for s in row.sources}
    for port_id in port_ids:
        if port_id not in current:
            raise Invalid(f"traffic_mirror_sources: port {port_id} is not a source of this session")
    bump_hosts(db, project, hosts_showing(db, sessions=[row.id]))  # the removed ones too
    for port_id in port_ids:
        row.sources.remove(current[port_id])
    row.updated_at = utc_now()
    db.flush()
    return row


def delete_session(db: Session, project: str, session_id: str) -> None:
    bump_change(db, project)
    row = get_session(db, project, session_id)
    bump_hosts(db, project, hosts_showing(db, sessions=[row.id]))
    db.delete(row)
    db.flush()


# A list's filters, by the domain's names (wire.query renames Huawei's), as columns.
_QUERY_COLUMNS = {
    **_CHANGE_COLUMNS,
    "id": "id",
    "created_at": "created_at",
    "updated_at": "updated_at",
}


# Session reads are the hot path (a list of 2,000 sessions must answer in well under
# 100 ms), so they select plain columns and the sources in one extra query instead
# of building ORM objects; the column names match SessionRow's attributes, so the
# same renderer serves both.
# Table columns, not ORM attributes: selecting ORM-annotated columns makes SQLAlchemy
# compare them per execution when it adapts a cached statement, a cost each show would pay.
SESSIONS = SessionRow.__table__.c
SOURCES = SourceRow.__table__.c
SESSION_COLUMNS_READ = (
    SESSIONS.id,
    SESSIONS.project_id,
    SESSIONS.name,
    SESSIONS.description,
    SESSIONS.filter_id,
    SESSIONS.target_id,
    SESSIONS.target_type,
    SESSIONS.virtual_network_id,
    SESSIONS.packet_length,
    SESSIONS.priority,
    SESSIONS.enabled,
    SESSIONS.type,
    SESSIONS.created_at,
    SESSIONS.updated_at,
)


# Built once: constructing a 14-column select costs more than running it.
_SESSION_BY_ID = select(*SESSION_COLUMNS_READ).where(
    SESSIONS.id == bindparam("session_id"), SESSIONS.project_id == bindparam("project")
)
_SOURCES_OF = (
    select(SOURCES.session_id, SOURCES.port_id)
    .where(SOURCES.session_id.in_(bindparam("session_ids", expanding=True)))
    .order_by(SOURCES.session_id, SOURCES.position)
)


def sources_by_session(db: Connection, session_ids: Sequence[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {session_id: [] for session_id in session_ids}
    if session_ids:
        rows = db.execute(_SOURCES_OF, {"session_ids": list(session_ids)})
        for session_id, port_id in rows:
            found[session_id].append(port_id)
    return found


def show_session(db: Connection, project: str, session_id: str) -> tuple[Any, list[str]]:
    row = db.execute(_SESSION_BY_ID, {"session_id": session_id, "project": project}).first()
    if row is None:
        raise NotFound(f"{session_id!r}: no such mirror session")
    return row, sources_by_session(db, [session_id])[session_id]


def list_sessions(
    db: Connection,
    project: str,
    where: Mapping[str, Sequence[Any]],
    limit: int | None,
    marker: str | None,
) -> tuple[RowPage, dict[str, list[str]]]:
    statement = select(*SESSION_COLUMNS_READ).where(SESSIONS.project_id == project)
    for key, values in where.items():
        statement = statement.where(column_matches(SESSIONS[_QUERY_COLUMNS[key]], values))
    page = paginate(db, statement, SESSIONS.id, limit, marker)
    return page, sources_by_session(db, [row.id for row in page.rows])
