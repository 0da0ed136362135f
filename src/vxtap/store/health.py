"""Target-group member health from collector heartbeats (docs/elb.md, "Health").

A member is healthy while a heartbeat of its host's collector named its port (or named
none, meaning all of the host's ports) within the last `SILENCE_S`. What is stored per
member: `healthy` and `last_heartbeat`, so every server process sees the same state.

- A heartbeat (`heartbeat`) writes `last_heartbeat` of its members: one UPDATE. Only
  when one of them was down does it also mark them healthy and move the revisions of
  the hosts whose sessions name their groups (their agents re-read at once).
- The server's checker (`vxtap.api.member_health`) looks for healthy members silent for
  longer (`projects_with_silent_members`, a read) and marks them down per project
  (`mark_silent_down`, one conditional UPDATE), moving the same revisions. The
  condition is evaluated by the database, so concurrent checkers of several server
  processes turn each member down once.

Time is the database's on PostgreSQL (several server processes, possibly on several
machines, compare one clock) and the server's on SQLite (one machine).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Table,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from vxtap.store.common import bump_change, bump_hosts, hosts_showing
from vxtap.store.errors import NotFound
from vxtap.store.schema import MemberRow, PortRow

# A member is down after this long without a heartbeat naming it.
SILENCE_S = 1.5
_SILENCE = timedelta(seconds=SILENCE_S)

PORTS = PortRow.__table__.c
MEMBER_TABLE = cast(Table, MemberRow.__table__)
MEMBERS = MEMBER_TABLE.c


def _is_postgresql(db: Session | Connection) -> bool:
    dialect = db.dialect if isinstance(db, Connection) else db.get_bind().dialect
    return dialect.name == "postgresql"


def _now(db: Session | Connection, before: timedelta = timedelta(0)) -> ColumnElement[Any]:
    """The current time (less `before`) as the column stores it: naive UTC."""
    if _is_postgresql(db):
        return func.timezone("UTC", func.now()) - literal(before)
    moment = datetime.now(UTC).replace(tzinfo=None) - before
    return literal(moment, MEMBERS.last_heartbeat.type)


def _silent(db: Session | Connection) -> ColumnElement[bool]:
    """Healthy, and no heartbeat within `SILENCE_S`."""
    condition: ColumnElement[bool] = MEMBERS.healthy.is_(True) & or_(
        MEMBERS.last_heartbeat.is_(None), MEMBERS.last_heartbeat < _now(db, _SILENCE)
    )
    return condition


def heartbeat(db: Session, project: str, host: str, devices: Sequence[str] | None) -> None:
    """`host`'s collector receives on `devices` (None: on all of the host's ports).

    A device that is not one of the host's ports raises `NotFound` naming it, before
    anything is written."""
    ports = db.execute(
        select(PORTS.id, PORTS.device).where(PORTS.project_id == project, PORTS.host == host)
    ).all()
    if devices is None:
        port_ids = [port_id for port_id, _ in ports]
    else:
        by_device = {device: port_id for port_id, device in ports}
        unknown = sorted(set(devices) - by_device.keys())
        if unknown:
            named = ", ".join(repr(d) for d in unknown[:5])
            more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
            raise NotFound(f"devices: host {host!r} has no port on {named}{more}")
        port_ids = sorted({by_device[d] for d in devices})
    if not port_ids:
        return
    now = _now(db)
    of_ports = (MEMBERS.project_id == project) & MEMBERS.port_id.in_(port_ids)
    # Usually every member is healthy already: then the UPDATE below is all a beat writes.
    if db.execute(
        select(MEMBERS.port_id).where(of_ports, MEMBERS.healthy.is_(False)).limit(1)
    ).first():
        bump_change(db, project)  # first: the project's writers queue on its row lock
        groups = db.scalars(
            update(MEMBER_TABLE)
            .where(of_ports, MEMBERS.healthy.is_(False))
            .values(healthy=True, last_heartbeat=now)
            .returning(MEMBERS.group_id)
        ).all()
        bump_hosts(db, project, hosts_showing(db, groups=groups))
    db.execute(update(MEMBER_TABLE).where(of_ports).values(last_heartbeat=now))


def projects_with_silent_members(db: Connection) -> list[str]:
    """The projects with a member that `mark_silent_down` would mark down now."""
    return list(
        db.scalars(
            select(MEMBERS.project_id).where(_silent(db)).distinct().order_by(MEMBERS.project_id)
        )
    )


def mark_silent_down(db: Session, project: str) -> int:
    """Mark the project's silent members down; how many this call marked (0 when another
    server process was first)."""
    of_project = MEMBERS.project_id == project
    if db.execute(select(MEMBERS.port_id).where(_silent(db), of_project).limit(1)).first() is None:
        return 0
    bump_change(db, project)  # first: the project's writers queue on its row lock
    groups = db.scalars(
        update(MEMBER_TABLE)
        .where(_silent(db), of_project)
        .values(healthy=False)
        .returning(MEMBERS.group_id)
    ).all()
    bump_hosts(db, project, hosts_showing(db, groups=groups))
    return len(groups)
