"""The rules of docs/behaviour.md §1.6 over the database: references, uniqueness, quotas.

Every function runs inside the caller's transaction (`Store.write()` /
`Store.read()`) and takes already-validated wire values (canonical case,
numbers as int). The checks here exist to word refusals precisely; the
constraints of `vxtap.store.schema` are what hold the rules under concurrency
(the API maps a constraint violation that slips past a check to the same
refusal). A refusal raises before anything is flushed, or the caller's
transaction rolls back: either way nothing changes.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import ValidationError
from sqlalchemy import (
    ColumnElement,
    Select,
    Table,
    bindparam,
    delete,
    func,
    insert,
    literal_column,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from vxtap import model
from vxtap.store.db import CHANGED_HOSTS
from vxtap.store.errors import (
    AlreadyExists,
    DuplicatePriority,
    InUse,
    Invalid,
    NotFound,
    QuotaExceeded,
)
from vxtap.store.schema import (
    Base,
    CounterRow,
    FilterRow,
    HostReportRow,
    HostRevisionRow,
    PortRow,
    ProjectChangeRow,
    RuleRow,
    SessionRow,
    SourceRow,
)


def new_id() -> str:
    """A UUIDv7 (RFC 9562): time-ordered, so ordering lists by id lists them by creation."""
    millis = time.time_ns() // 1_000_000
    raw = bytearray(millis.to_bytes(6, "big") + os.urandom(10))
    raw[6] = 0x70 | (raw[6] & 0x0F)
    raw[8] = 0x80 | (raw[8] & 0x3F)
    return str(uuid.UUID(bytes=bytes(raw)))


def utc_now() -> datetime:
    """Second precision, naive UTC: how timestamps are stored and shown (`...Z`)."""
    return datetime.now(UTC).replace(microsecond=0, tzinfo=None)


RowT = TypeVar("RowT", bound=Base)


def _insert(db: Session, row: RowT) -> RowT:
    """Insert a new row with one Core statement on the session's connection (same
    transaction) and return it unattached, as the answer to render.

    Creates are the write hot path: the ORM's unit of work (add, flush, identity map)
    cost more than the INSERT itself (docs/benchmarks.md). Nothing needs reading back,
    as no column has a database default: the row is exactly what was inserted.
    """
    table = row.__table__
    assert isinstance(table, Table)  # every mapped class here is one declarative table
    db.connection().execute(insert(table), {c.key: getattr(row, c.key) for c in table.columns})
    return row


# -- the change counter -----------------------------------------------------------------

_CHANGES = ProjectChangeRow.__table__.c
_CHANGE_OF = select(_CHANGES.counter).where(_CHANGES.project_id == bindparam("project"))


def bump_change(db: Session, project: str) -> None:
    """Count a write that may change some host's desired state, in its own transaction.

    Called first by every such write: the upsert takes the project's counter row lock
    before the write locks anything else, so one project's writers queue on it
    (PostgreSQL) instead of locking rows in different orders; SQLite's BEGIN IMMEDIATE
    serializes writers anyway. A refused write rolls the bump back with it.
    """
    dialect = db.get_bind().dialect.name
    statement = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(
        ProjectChangeRow
    ).values(project_id=project, counter=1)
    db.connection().execute(
        statement.on_conflict_do_update(
            index_elements=[_CHANGES.project_id],
            set_={"counter": _CHANGES.counter + 1},
        )
    )


def change_counter(db: Session | Connection, project: str) -> int:
    """The project's change counter: one primary-key lookup (0 before its first write)."""
    found = db.execute(_CHANGE_OF, {"project": project}).scalar()
    return 0 if found is None else int(found)


# -- per-host revisions -------------------------------------------------------------------

# PostgreSQL channel on which a committed write names its project (see vxtap.api.held).
CHANGES_CHANNEL = "vxtap_changes"
NOTIFY_PAYLOAD_BYTES = 7900
_HOST_REVISIONS = HostRevisionRow.__table__.c
_HOST_REVISION_OF = select(_HOST_REVISIONS.revision).where(
    _HOST_REVISIONS.project_id == bindparam("project"), _HOST_REVISIONS.host == bindparam("host")
)
_HOST_REVISIONS_OF_PROJECT = select(_HOST_REVISIONS.host, _HOST_REVISIONS.revision).where(
    _HOST_REVISIONS.project_id == bindparam("project")
)


def hosts_showing(
    db: Session,
    *,
    sessions: Iterable[str] = (),
    filters: Iterable[str] = (),
    ports: Iterable[str] = (),
) -> set[str]:
    """The hosts whose desired state shows any of these objects (see `desired_state`): a
    session is shown on the hosts of its sources, a filter wherever a session using it
    is, a port on its own host and wherever a session targeting it is."""
    session_ids, filter_ids, port_ids = set(sessions), set(filters), set(ports)
    if filter_ids:
        session_ids |= set(
            db.scalars(select(SessionRow.id).where(SessionRow.filter_id.in_(filter_ids)))
        )
    hosts: set[str] = set()
    if port_ids:
        session_ids |= set(
            db.scalars(select(SessionRow.id).where(SessionRow.target_id.in_(port_ids)))
        )
        hosts |= set(db.scalars(select(PortRow.host).where(PortRow.id.in_(port_ids))))
    if session_ids:
        hosts |= set(
            db.scalars(
                select(PortRow.host)
                .join(SourceRow, SourceRow.port_id == PortRow.id)
                .where(SourceRow.session_id.in_(session_ids))
                .distinct()
            )
        )
    return hosts


def bump_hosts(db: Session, project: str, hosts: Iterable[str]) -> None:
    """Count a change of these hosts' desired states, in the caller's transaction (after
    `bump_change`, whose row lock orders the project's writers). On PostgreSQL the commit
    also notifies every server process listening on `CHANGES_CHANNEL` (JSON: project and,
    when they fit, hosts)."""
    ordered = sorted(set(hosts))
    if not ordered:
        return
    dialect = db.get_bind().dialect.name
    statement = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(HostRevisionRow)
    db.connection().execute(
        statement.on_conflict_do_update(
            index_elements=[_HOST_REVISIONS.project_id, _HOST_REVISIONS.host],
            set_={"revision": _HOST_REVISIONS.revision + 1},
        ),
        [{"project_id": project, "host": host, "revision": 1} for host in ordered],
    )
    changed: dict[str, set[str]] = db.info.setdefault(CHANGED_HOSTS, {})
    changed.setdefault(project, set()).update(ordered)  # for Store.on_host_changes
    if dialect == "postgresql":
        # Delivered at commit, and only if it commits. The hosts ride along while they
        # fit PostgreSQL's 8,000-byte payload; else listeners re-read the whole project.
        payload = json.dumps({"project": project, "hosts": ordered})
        if len(payload) > NOTIFY_PAYLOAD_BYTES:
            payload = json.dumps({"project": project})
        db.connection().execute(
            text("SELECT pg_notify(:channel, :payload)"),
            {"channel": CHANGES_CHANNEL, "payload": payload},
        )


def host_revision(db: Session | Connection, project: str, host: str) -> int:
    """The host's desired-state revision: one primary-key lookup (0 before any change)."""
    found = db.execute(_HOST_REVISION_OF, {"project": project, "host": host}).scalar()
    return 0 if found is None else int(found)


def host_revisions(db: Session | Connection, project: str) -> dict[str, int]:
    """Every host of the project that has a revision."""
    rows = db.execute(_HOST_REVISIONS_OF_PROJECT, {"project": project}).all()
    return {host: int(revision) for host, revision in rows}


# -- pagination -------------------------------------------------------------------------


@dataclass(frozen=True)
class RowPage:
    """One page of a list's rows, and the marker of the next page (None on the last)."""

    rows: Sequence[Any]
    next_marker: str | None

    def page_info(self) -> dict[str, Any]:
        info: dict[str, Any] = {"current_count": len(self.rows)}
        if self.rows:
            info["previous_marker"] = self.rows[0].id
        if self.next_marker is not None:
            info["next_marker"] = self.next_marker
        return info


def paginate(
    db: Session | Connection,
    statement: Select[*tuple[Any, ...]],
    id_column: Any,
    limit: int | None,
    marker: str | None,
) -> RowPage:
    """Keyset pagination by id: stable under concurrent inserts, O(page) per request.

    On an ORM session the statement selects one entity; on a Connection, plain columns.
    """
    size = limit or model.MAX_PAGE_SIZE
    if marker:
        statement = statement.where(id_column > marker)
    ordered = statement.order_by(id_column).limit(size + 1)
    rows: list[Any] = list(
        db.execute(ordered) if isinstance(db, Connection) else db.scalars(ordered).unique()
    )
    if len(rows) > size:
        rows = rows[:size]
        return RowPage(rows, rows[-1].id)
    return RowPage(rows, None)


def _equals(column: Any, values: Sequence[Any]) -> ColumnElement[bool]:
    condition: ColumnElement[bool] = column == values[0] if len(values) == 1 else column.in_(values)
    return condition


_OwnedRow = TypeVar("_OwnedRow", FilterRow, RuleRow, PortRow, SessionRow)


def _owned(
    db: Session, row_type: type[_OwnedRow], project: str, row_id: str, what: str, field: str | None
) -> _OwnedRow:
    """The project's row of that id. Another project's row answers exactly like a missing
    one, so ids reveal nothing across projects."""
    row = db.get(row_type, row_id)
    if row is None or row.project_id != project:
        where = f"{field} " if field else ""
        raise NotFound(f"{where}{row_id!r}: no such {what}")
    return row


# -- filters ----------------------------------------------------------------------------


def get_filter(db: Session, project: str, filter_id: str, field: str | None = None) -> FilterRow:
    return _owned(db, FilterRow, project, filter_id, "mirror filter", field)


def create_filter(db: Session, project: str, fields: Mapping[str, Any]) -> FilterRow:
    bump_change(db, project)
    now = utc_now()
    row = FilterRow(
        id=new_id(),
        project_id=project,
        name=fields["name"],
        description=fields.get("description") or "",
        created_at=now,
        updated_at=now,
    )
    row.rules = []
    return _insert(db, row)


def update_filter(
    db: Session, project: str, filter_id: str, fields: Mapping[str, Any]
) -> FilterRow:
    bump_change(db, project)
    row = get_filter(db, project, filter_id)
    if fields.get("name") not in (None, row.name):  # the name is in the desired state
        bump_hosts(db, project, hosts_showing(db, filters=[row.id]))
    for key in ("name", "description"):
        if key in fields and fields[key] is not None:
            setattr(row, key, fields[key])
    row.updated_at = utc_now()
    db.flush()
    return row


def delete_filter(db: Session, project: str, filter_id: str) -> None:
    bump_change(db, project)
    row = get_filter(db, project, filter_id)
    users = db.scalars(select(SessionRow.id).where(SessionRow.filter_id == filter_id)).all()
    if users:
        raise InUse(
            f"mirror filter {filter_id} is used by session(s) {', '.join(users)}: "
            "delete them or give them another filter first"
        )
    db.delete(row)
    db.flush()


def list_filters(
    db: Session,
    project: str,
    where: Mapping[str, Sequence[Any]],
    limit: int | None,
    marker: str | None,
) -> RowPage:
    statement = select(FilterRow).where(FilterRow.project_id == project)
    for key, values in where.items():
        statement = statement.where(_equals(getattr(FilterRow, key), values))
    return paginate(db, statement, FilterRow.id, limit, marker)


# -- rules ------------------------------------------------------------------------------


def get_rule(db: Session, project: str, rule_id: str) -> RuleRow:
    return _owned(db, RuleRow, project, rule_id, "mirror filter rule", None)


def domain_rule(row: RuleRow) -> model.Rule:
    """The domain value of a rule row; raises Invalid for an inconsistent combination."""
    try:
        return model.Rule(
            id=row.id,
            filter_id=row.filter_id,
            direction=model.Direction(row.direction),
            priority=row.priority,
            action=model.Action(row.action),
            ethertype=model.EtherType(row.ethertype),
            protocol=model.Protocol(row.protocol),
            source_cidr=row.source_cidr_block,
            destination_cidr=row.destination_cidr_block,
            source_ports=model.PortRange.parse(row.source_port_range)
            if row.source_port_range
            else None,
            destination_ports=model.PortRange.parse(row.destination_port_range)
            if row.destination_port_range
            else None,
        )
    except ValidationError as exc:
        raise Invalid(
            "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
        ) from None


def _check_rule_priority_free(db: Session, row: RuleRow) -> None:
    other = db.scalar(
        select(RuleRow.id).where(
            RuleRow.filter_id == row.filter_id,
            RuleRow.direction == row.direction,
            RuleRow.priority == row.priority,
            RuleRow.id != row.id,
        )
    )
    if other is not None:
        raise DuplicatePriority(
            f"priority {row.priority} is already used by rule {other} among the {row.direction} "
            f"rules of filter {row.filter_id}: rule priorities are unique per filter and direction"
        )


RULE_FIELDS = (
    "priority",
    "action",
    "ethertype",
    "protocol",
    "source_cidr_block",
    "destination_cidr_block",
    "source_port_range",
    "destination_port_range",
    "description",
)


def _check_rule_quota(db: Session, row: RuleRow, quota: int) -> None:
    """Safe under concurrency without a constraint: every rule write of a project bumps
    its change counter first, and that serializes them (`bump_change`)."""
    count = db.scalar(
        select(func.count())
        .select_from(RuleRow)
        .where(RuleRow.filter_id == row.filter_id, RuleRow.direction == row.direction)
    )
    if count is not None and count >= quota:
        raise QuotaExceeded(
            f"filter {row.filter_id} has {count} {row.direction} rules, the most a filter "
            f"may have per direction (quota {quota}: every packet is compared with the "
            "rules ahead of the one that decides)"
        )


def create_rule(
    db: Session,
    project: str,
    fields: Mapping[str, Any],
    *,
    quota: int = model.DEFAULT_MAX_RULES_PER_DIRECTION,
) -> RuleRow:
    """`quota`: the most rules a filter may have in one direction."""
    bump_change(db, project)
    parent = get_filter(db, project, fields["traffic_mirror_filter_id"], "traffic_mirror_filter_id")
    now = utc_now()
    row = RuleRow(
        id=new_id(),
        project_id=project,
        filter_id=parent.id,
        direction=fields["direction"],
        created_at=now,
        updated_at=now,
        description="",
        source_cidr_block=None,
        destination_cidr_block=None,
        source_port_range=None,
        destination_port_range=None,
    )
    for key in RULE_FIELDS:
        if fields.get(key) is not None:
            setattr(row, key, fields[key])
    domain_rule(row)
    _check_rule_quota(db, row, quota)
    _check_rule_priority_free(db, row)
    parent.updated_at = now
    bump_hosts(db, project, hosts_showing(db, filters=[parent.id]))
    return _insert(db, row)


def update_rule(db: Session, project: str, rule_id: str, fields: Mapping[str, Any]) -> RuleRow:
    bump_change(db, project)
    row = get_rule(db, project, rule_id)
    # Validate the merged result before touching the row, so a refusal changes nothing.
    merged = {key: getattr(row, key) for key in RULE_FIELDS}
    merged.update({key: value for key, value in fields.items() if key in RULE_FIELDS})
    merged["description"] = merged["description"] or ""
    candidate = RuleRow(id=row.id, filter_id=row.filter_id, direction=row.direction, **merged)
    domain_rule(candidate)
    if merged["priority"] != row.priority:
        _check_rule_priority_free(db, candidate)
    for key, value in merged.items():
        setattr(row, key, value)
    row.updated_at = row.filter.updated_at = utc_now()
    bump_hosts(db, project, hosts_showing(db, filters=[row.filter_id]))
    db.flush()
    return row


def delete_rule(db: Session, project: str, rule_id: str) -> None:
    bump_change(db, project)
    row = get_rule(db, project, rule_id)
    row.filter.updated_at = utc_now()
    bump_hosts(db, project, hosts_showing(db, filters=[row.filter_id]))
    db.delete(row)
    db.flush()


RULE_QUERY_FIELDS = {
    "id": RuleRow.id,
    "description": RuleRow.description,
    "traffic_mirror_filter_id": RuleRow.filter_id,
    "direction": RuleRow.direction,
    "protocol": RuleRow.protocol,
    "ethertype": RuleRow.ethertype,
    "source_cidr_block": RuleRow.source_cidr_block,
    "destination_cidr_block": RuleRow.destination_cidr_block,
    "source_port_range": RuleRow.source_port_range,
    "destination_port_range": RuleRow.destination_port_range,
    "action": RuleRow.action,
    "priority": RuleRow.priority,
}


def list_rules(
    db: Session,
    project: str,
    where: Mapping[str, Sequence[Any]],
    limit: int | None,
    marker: str | None,
) -> RowPage:
    statement = select(RuleRow).where(RuleRow.project_id == project)
    for key, values in where.items():
        statement = statement.where(_equals(RULE_QUERY_FIELDS[key], values))
    return paginate(db, statement, RuleRow.id, limit, marker)


# -- ports ------------------------------------------------------------------------------


def get_port(db: Session, project: str, port_id: str, field: str | None = None) -> PortRow:
    return _owned(db, PortRow, project, port_id, "port", field)


def _port_by_device(db: Session, project: str, host: str, device: str) -> PortRow | None:
    return db.scalar(
        select(PortRow).where(
            PortRow.project_id == project, PortRow.host == host, PortRow.device == device
        )
    )


def register_host_ports(
    db: Session, project: str, host: str, ports: Iterable[Mapping[str, Any]]
) -> list[PortRow]:
    """Create or refresh the host's reported interfaces; ids stay the same per device.

    Ports the host no longer reports are kept: a session may still name them.
    """
    bump_change(db, project)
    now = utc_now()
    existing = {
        row.device: row
        for row in db.scalars(
            select(PortRow).where(PortRow.project_id == project, PortRow.host == host)
        )
    }
    changed: list[str] = []
    for port in ports:
        row = existing.get(port["device"])
        if row is None:
            row = PortRow(
                id=new_id(), project_id=project, host=host, device=port["device"], created_at=now
            )
            db.add(row)
            existing[row.device] = row
        if (row.mac, row.ipv4, row.ipv6) != (port.get("mac"), port["ipv4"], port["ipv6"]):
            row.mac, row.ipv4, row.ipv6 = port.get("mac"), list(port["ipv4"]), list(port["ipv6"])
            row.updated_at = now
            changed.append(row.id)
        elif row.updated_at is None:
            row.updated_at = now
    db.flush()
    if changed:  # a re-registration that changes nothing wakes no one
        bump_hosts(db, project, hosts_showing(db, ports=changed) | {host})
    return sorted(existing.values(), key=lambda r: r.id)


def create_port(db: Session, project: str, fields: Mapping[str, Any]) -> PortRow:
    bump_change(db, project)
    host, device = fields["host"], fields["device"]
    other = _port_by_device(db, project, host, device)
    if other is not None:
        raise AlreadyExists(f"port {host}/{device} exists already (id {other.id})")
    now = utc_now()
    row = PortRow(
        id=new_id(),
        project_id=project,
        host=host,
        device=device,
        mac=fields.get("mac"),
        ipv4=list(fields["ipv4"]),
        ipv6=list(fields["ipv6"]),
        created_at=now,
        updated_at=now,
    )
    bump_hosts(db, project, [host])
    return _insert(db, row)


def delete_port(db: Session, project: str, port_id: str) -> None:
    bump_change(db, project)
    row = get_port(db, project, port_id)
    users = sorted(
        set(db.scalars(select(SessionRow.id).where(SessionRow.target_id == port_id)))
        | set(db.scalars(select(SourceRow.session_id).where(SourceRow.port_id == port_id)))
    )
    if users:
        raise InUse(
            f"port {port_id} is named by session(s) {', '.join(users)}: "
            "remove it from them or delete them first"
        )
    bump_hosts(db, project, [row.host])
    db.delete(row)
    db.flush()


PORT_QUERY_FIELDS = {
    "id": PortRow.id,
    "name": PortRow.device,
    "mac_address": PortRow.mac,
    "binding:host_id": PortRow.host,
}


def list_ports(
    db: Session,
    project: str,
    where: Mapping[str, Sequence[Any]],
    limit: int | None,
    marker: str | None,
) -> RowPage:
    statement = select(PortRow).where(PortRow.project_id == project)
    for key, values in where.items():
        statement = statement.where(_equals(PORT_QUERY_FIELDS[key], values))
    return paginate(db, statement, PortRow.id, limit, marker)


# -- sessions ---------------------------------------------------------------------------


def get_session(db: Session, project: str, session_id: str) -> SessionRow:
    return _owned(db, SessionRow, project, session_id, "mirror session", None)


def _check_target(db: Session, project: str, target_id: str, sources: Iterable[str]) -> None:
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
    if row.target_id in port_ids:
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


def create_session(db: Session, project: str, fields: Mapping[str, Any]) -> SessionRow:
    bump_change(db, project)
    sources: list[str] = list(fields["traffic_mirror_sources"])
    get_filter(db, project, fields["traffic_mirror_filter_id"], "traffic_mirror_filter_id")
    _check_target(db, project, fields["traffic_mirror_target_id"], sources)
    now = utc_now()
    row = SessionRow(
        id=new_id(),
        project_id=project,
        name=fields["name"],
        description=fields.get("description") or "",
        filter_id=fields["traffic_mirror_filter_id"],
        target_id=fields["traffic_mirror_target_id"],
        target_type=fields["traffic_mirror_target_type"],
        virtual_network_id=fields["virtual_network_id"],
        packet_length=fields["packet_length"],
        priority=fields["priority"],
        enabled=fields["enabled"],
        type=fields["type"],
        created_at=now,
        updated_at=now,
    )
    row.sources = []
    _attach_sources(db, project, row, sources)
    _insert(db, row)
    for source in row.sources:
        _insert(db, source)
    bump_hosts(db, project, hosts_showing(db, sessions=[row.id]))
    return row


SESSION_COLUMNS = {
    "name": "name",
    "description": "description",
    "traffic_mirror_filter_id": "filter_id",
    "traffic_mirror_target_id": "target_id",
    "traffic_mirror_target_type": "target_type",
    "virtual_network_id": "virtual_network_id",
    "packet_length": "packet_length",
    "priority": "priority",
    "enabled": "enabled",
    "type": "type",
}


def update_session(
    db: Session, project: str, session_id: str, fields: Mapping[str, Any]
) -> SessionRow:
    bump_change(db, project)
    row = get_session(db, project, session_id)
    changes = {k: v for k, v in fields.items() if v is not None}
    sources = [s.port_id for s in row.sources]
    if "traffic_mirror_filter_id" in changes:
        get_filter(db, project, changes["traffic_mirror_filter_id"], "traffic_mirror_filter_id")
    if "traffic_mirror_target_id" in changes:
        _check_target(db, project, changes["traffic_mirror_target_id"], sources)
    if changes.get("priority", row.priority) != row.priority:
        _check_priority_free(db, row.id, changes["priority"], sources)
    shown = {"name", "traffic_mirror_filter_id", "traffic_mirror_target_id",
             "virtual_network_id", "packet_length", "priority", "enabled"}  # fmt: skip
    if any(getattr(row, SESSION_COLUMNS[k]) != v for k, v in changes.items() if k in shown):
        bump_hosts(db, project, hosts_showing(db, sessions=[row.id]))
    for key, value in changes.items():
        setattr(row, SESSION_COLUMNS[key], value)
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


SESSION_QUERY_FIELDS = {
    "id": SessionRow.id,
    "name": SessionRow.name,
    "description": SessionRow.description,
    "traffic_mirror_filter_id": SessionRow.filter_id,
    "traffic_mirror_target_id": SessionRow.target_id,
    "traffic_mirror_target_type": SessionRow.target_type,
    "virtual_network_id": SessionRow.virtual_network_id,
    "packet_length": SessionRow.packet_length,
    "priority": SessionRow.priority,
    "enabled": SessionRow.enabled,
    "type": SessionRow.type,
    "created_at": SessionRow.created_at,
    "updated_at": SessionRow.updated_at,
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
        statement = statement.where(_equals(SESSIONS[SESSION_QUERY_FIELDS[key].key], values))
    page = paginate(db, statement, SESSIONS.id, limit, marker)
    return page, sources_by_session(db, [row.id for row in page.rows])


# -- the agent's view -------------------------------------------------------------------

# The desired state is built after every change the agents must see, and the ORM's
# object loading and pydantic's validation were most of its cost (docs/benchmarks.md,
# Agent): it is read like the sessions, with prebuilt Core statements rendered by
# position, straight into the JSON document the endpoint answers with. The rows were
# validated when written and are stored canonical (wire.fields.parse_cidr, str(PortRange)), so
# the document is exactly what `model.DesiredState.model_dump(mode="json")` gave for the
# same rows (tests/store/test_desired_state.py keeps the model-built reference).
PORTS = PortRow.__table__.c
FILTERS = FilterRow.__table__.c
RULES = RuleRow.__table__.c

_ON_HOST = (PORTS.project_id == bindparam("project"), PORTS.host == bindparam("host"))
_HOST_PORTS = select(PORTS.id).where(*_ON_HOST)
_HOST_SESSIONS = select(SOURCES.session_id).where(SOURCES.port_id.in_(_HOST_PORTS))
_PORT_COLUMNS = (PORTS.id, PORTS.host, PORTS.device, PORTS.mac, PORTS.ipv4, PORTS.ipv6)
_STATE_PORTS = select(*_PORT_COLUMNS).where(*_ON_HOST).order_by(PORTS.id)
_STATE_SESSIONS = (
    select(
        SESSIONS.id,
        SESSIONS.name,
        SESSIONS.filter_id,
        SESSIONS.target_id,
        SESSIONS.virtual_network_id,
        SESSIONS.packet_length,
        SESSIONS.priority,
        SESSIONS.enabled,
    )
    .where(SESSIONS.id.in_(_HOST_SESSIONS))
    .order_by(SESSIONS.priority, SESSIONS.id)
)
_STATE_SOURCES = (
    select(SOURCES.session_id, SOURCES.port_id)
    .where(SOURCES.session_id.in_(_HOST_SESSIONS))
    .order_by(SOURCES.session_id, SOURCES.position)
)
_STATE_FILTER_IDS = select(SESSIONS.filter_id).where(SESSIONS.id.in_(_HOST_SESSIONS))
_HOST_RULES = select(RULES.id).where(RULES.filter_id.in_(_STATE_FILTER_IDS))
_STATE_FILTERS = (
    select(FILTERS.id, FILTERS.name).where(FILTERS.id.in_(_STATE_FILTER_IDS)).order_by(FILTERS.id)
)
_STATE_RULES = (
    select(
        RULES.id,
        RULES.filter_id,
        RULES.direction,
        RULES.priority,
        RULES.action,
        RULES.ethertype,
        RULES.protocol,
        RULES.source_cidr_block,
        RULES.destination_cidr_block,
        RULES.source_port_range,
        RULES.destination_port_range,
    )
    .where(RULES.filter_id.in_(_STATE_FILTER_IDS))
    .order_by(RULES.filter_id, RULES.direction, RULES.priority)
)
_STATE_TARGETS = (
    select(*_PORT_COLUMNS)
    .where(PORTS.id.in_(select(SESSIONS.target_id).where(SESSIONS.id.in_(_HOST_SESSIONS))))
    .order_by(PORTS.id)
)


def _port_json(row: Sequence[Any]) -> dict[str, Any]:
    port_id, host, device, mac, ipv4, ipv6 = row
    return {
        "id": port_id,
        "host": host,
        "device": device,
        "mac": mac,
        "ipv4": list(ipv4),
        "ipv6": list(ipv6),
    }


def _port_range_json(text: str | None) -> dict[str, int] | None:
    """A stored "START-END" as `model.PortRange` dumps it."""
    if not text:
        return None
    start, _, end = text.partition("-")
    return {"start": int(start), "end": int(end)}


def desired_state(db: Connection, project: str, host: str) -> dict[str, Any]:
    """What `host`'s agent must program: its ports, the sessions mirroring from them, and
    the filters and target ports those sessions name, as the JSON document of
    `model.DesiredState` (its `model_dump(mode="json")`, keys in field order), with
    `revision` the hash of the rest of the content."""
    where = {"project": project, "host": host}
    ports = [_port_json(row) for row in db.execute(_STATE_PORTS, where).all()]
    sources: dict[str, list[str]] = {}
    for session_id, port_id in db.execute(_STATE_SOURCES, where).all():
        sources.setdefault(session_id, []).append(port_id)
    sessions = [
        {
            "id": session_id,
            "name": name,
            "filter_id": filter_id,
            "sources": sources.get(session_id, []),
            "target_id": target_id,
            "vni": vni,
            "packet_length": packet_length,
            "priority": priority,
            "enabled": enabled,
        }
        for (
            session_id,
            name,
            filter_id,
            target_id,
            vni,
            packet_length,
            priority,
            enabled,
        ) in db.execute(_STATE_SESSIONS, where).all()
    ]
    rules: dict[str, list[dict[str, Any]]] = {}
    for (
        rule_id,
        filter_id,
        direction,
        priority,
        action,
        ethertype,
        protocol,
        source_cidr,
        destination_cidr,
        source_ports,
        destination_ports,
    ) in db.execute(_STATE_RULES, where).all():
        rules.setdefault(filter_id, []).append(
            {
                "id": rule_id,
                "filter_id": filter_id,
                "direction": direction,
                "priority": priority,
                "action": action,
                "ethertype": ethertype,
                "protocol": protocol,
                "source_cidr": source_cidr,
                "destination_cidr": destination_cidr,
                "source_ports": _port_range_json(source_ports),
                "destination_ports": _port_range_json(destination_ports),
            }
        )
    filters = [
        {"id": filter_id, "name": name, "rules": rules.get(filter_id, [])}
        for filter_id, name in db.execute(_STATE_FILTERS, where).all()
    ]
    targets = [_port_json(row) for row in db.execute(_STATE_TARGETS, where).all()]
    state: dict[str, Any] = {
        "host": host,
        "revision": "",
        "ports": ports,
        "sessions": sessions,
        "filters": filters,
        "targets": targets,
    }
    state["revision"] = hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()[:16]
    return state


def put_counters(
    db: Session,
    project: str,
    host: str,
    sessions: Mapping[str, Mapping[str, int]],
    rules: Mapping[str, Mapping[str, int]],
) -> None:
    """Replace the host's latest report (totals since its kernel state was created).

    Only what the host's desired state holds is kept: its sessions (a source port on
    the host) and their filters' rules. Anything else (an id that does not exist, was
    deleted meanwhile, or belongs to another host's sessions) is dropped, and a host
    without ports stores nothing, not even its report time: made-up hosts and ids
    cannot fill the table or show up in `session_stats`.
    """
    where = {"project": project, "host": host}
    if db.execute(_HOST_PORTS.limit(1), where).first() is None:
        return
    if sessions:
        served = set(db.scalars(_HOST_SESSIONS, where))
        sessions = {k: v for k, v in sessions.items() if k in served}
    if rules:
        served = set(db.scalars(_HOST_RULES, where))
        rules = {k: v for k, v in rules.items() if k in served}
    report = db.get(HostReportRow, (project, host))
    if report is None:
        db.add(HostReportRow(project_id=project, host=host, reported_at=utc_now()))
    else:
        report.reported_at = utc_now()
    db.execute(delete(CounterRow).where(CounterRow.project_id == project, CounterRow.host == host))
    db.flush()
    rows = [
        {
            "project_id": project,
            "host": host,
            "kind": kind,
            "object_id": object_id,
            "packets": value["packets"],
            "bytes": value["bytes"],
            "uncut_packets": value.get("uncut_packets", 0),
            "uncut_bytes": value.get("uncut_bytes", 0),
        }
        for kind, values in (("session", sessions), ("rule", rules))
        for object_id, value in values.items()
    ]
    if rows:  # one executemany, no ORM objects: a 12,000-entry report is one cheap statement
        db.connection().execute(insert(CounterRow), rows)


def _split_sum(column: Any) -> tuple[Any, Any]:
    """Sums of a 64-bit column's high and low 32 bits: SQLite's sum() fails with "integer
    overflow" past 2^63-1 (two hosts' counters can get there), while these two cannot
    before 2^31 rows. `(high << 32) + low` is the exact sum, as a Python int."""
    # Literals, not bind parameters: PostgreSQL has `bigint >> integer`, no `bigint >> bigint`.
    high = column.op(">>")(literal_column("32"))
    low = column.op("&")(literal_column(str(0xFFFFFFFF)))
    return func.sum(high), func.sum(low)


def session_stats(db: Session, project: str) -> dict[str, Any]:
    stats: dict[str, Any] = {"sessions": {}, "rules": {}, "hosts": {}}
    for (
        kind,
        object_id,
        packets_high,
        packets_low,
        bytes_high,
        bytes_low,
        uncut_packets_high,
        uncut_packets_low,
        uncut_bytes_high,
        uncut_bytes_low,
    ) in db.execute(
        select(
            CounterRow.kind,
            CounterRow.object_id,
            *_split_sum(CounterRow.packets),
            *_split_sum(CounterRow.bytes),
            *_split_sum(CounterRow.uncut_packets),
            *_split_sum(CounterRow.uncut_bytes),
        )
        .where(CounterRow.project_id == project)
        .group_by(CounterRow.kind, CounterRow.object_id)
        .order_by(CounterRow.kind, CounterRow.object_id)
    ):
        totals = {
            "packets": (int(packets_high) << 32) + int(packets_low),
            "bytes": (int(bytes_high) << 32) + int(bytes_low),
        }
        uncut_packets = (int(uncut_packets_high) << 32) + int(uncut_packets_low)
        uncut_bytes = (int(uncut_bytes_high) << 32) + int(uncut_bytes_low)
        if kind == "session" and (uncut_packets or uncut_bytes):  # only when there are any
            totals.update(uncut_packets=uncut_packets, uncut_bytes=uncut_bytes)
        stats["sessions" if kind == "session" else "rules"][object_id] = totals
    for host, reported_at in db.execute(
        select(HostReportRow.host, HostReportRow.reported_at)
        .where(HostReportRow.project_id == project)
        .order_by(HostReportRow.host)
    ):
        stats["hosts"][host] = reported_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    return stats
