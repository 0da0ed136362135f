"""What every aggregate of the store shares: ids and clocks, the row insert, the
project's change counter and the hosts' revisions, pages of rows, ownership checks.

Every function runs inside the caller's transaction (`Store.write()` /
`Store.read()`). The checks here exist to word refusals precisely; the
constraints of `vxtap.store.schema` are what hold the rules under concurrency.
A refusal raises before anything is flushed, or the caller's transaction rolls
back: either way nothing changes.
"""

from __future__ import annotations

import enum
import json
import os
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select, Table, bindparam, insert, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from vxtap import model
from vxtap.store.db import CHANGED_HOSTS
from vxtap.store.errors import NotFound
from vxtap.store.schema import (
    Base,
    FilterRow,
    HostRevisionRow,
    MemberRow,
    PortRow,
    ProjectChangeRow,
    RuleRow,
    SessionRow,
    SourceRow,
    TargetGroupRow,
)


class Keep(enum.Enum):
    """An update's "leave this field as it is", apart from None, which clears an optional field."""

    KEEP = "keep"


KEEP = Keep.KEEP


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


def insert_row(db: Session, row: RowT) -> RowT:
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
    groups: Iterable[str] = (),
) -> set[str]:
    """The hosts whose desired state shows any of these objects (see `desired_state`): a
    session is shown on the hosts of its sources, a filter or target group wherever a
    session using it is, a port on its own host and wherever a session targeting it (or
    a group it is a member of) is."""
    session_ids, filter_ids, port_ids = set(sessions), set(filters), set(ports)
    group_ids = set(groups)
    if port_ids:
        group_ids |= set(
            db.scalars(select(MemberRow.group_id).where(MemberRow.port_id.in_(port_ids)))
        )
    if group_ids:
        session_ids |= set(
            db.scalars(select(SessionRow.id).where(SessionRow.target_group_id.in_(group_ids)))
        )
    if filter_ids:
        session_ids |= set(
            db.scalars(select(SessionRow.id).where(SessionRow.filter_id.in_(filter_ids)))
        )
    hosts: set[str] = set()
    if port_ids:
        session_ids |= set(
            db.scalars(select(SessionRow.id).where(SessionRow.target_port_id.in_(port_ids)))
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


def column_matches(column: Any, values: Sequence[Any]) -> ColumnElement[bool]:
    condition: ColumnElement[bool] = column == values[0] if len(values) == 1 else column.in_(values)
    return condition


_OwnedRow = TypeVar("_OwnedRow", FilterRow, RuleRow, PortRow, SessionRow, TargetGroupRow)


def list_owned(
    db: Session,
    row_type: type[_OwnedRow],
    project: str,
    columns: Mapping[str, Any],
    where: Mapping[str, Sequence[Any]],
    limit: int | None,
    marker: str | None,
) -> RowPage:
    """One page of the project's rows of a resource, filtered by `where` (a domain name
    -> any of its values; `columns` names each one's column)."""
    statement = select(row_type).where(row_type.project_id == project)
    for key, values in where.items():
        statement = statement.where(column_matches(columns[key], values))
    return paginate(db, statement, row_type.id, limit, marker)


def owned_row(
    db: Session, row_type: type[_OwnedRow], project: str, row_id: str, what: str, field: str | None
) -> _OwnedRow:
    """The project's row of that id. Another project's row answers exactly like a missing
    one, so ids reveal nothing across projects."""
    row = db.get(row_type, row_id)
    if row is None or row.project_id != project:
        where = f"{field} " if field else ""
        raise NotFound(f"{where}{row_id!r}: no such {what}")
    return row
