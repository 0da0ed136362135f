"""Target groups: collector ports an `elb` session mirrors to, flow by flow (docs/elb.md);
in the caller's transaction.

A member's `number` is what the agents' placement tables hold: given when the port joins
(the lowest free one) and kept while it stays, so a change of membership moves only the
flows of the members that came or went.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from vxtap import model
from vxtap.store.common import (
    RowPage,
    bump_change,
    bump_hosts,
    hosts_showing,
    list_owned,
    new_id,
    owned_row,
    utc_now,
)
from vxtap.store.errors import InUse, Invalid, QuotaExceeded
from vxtap.store.ports import get_port
from vxtap.store.schema import MemberRow, SessionRow, SourceRow, TargetGroupRow


@dataclass(frozen=True)
class TargetGroupSpec:
    """A new target group, with the ports that join it at once (may be none)."""

    name: str
    description: str = ""
    ports: tuple[str, ...] = ()


@dataclass(frozen=True)
class TargetGroupChange:
    """What an update sets; None leaves a field as it is."""

    name: str | None = None
    description: str | None = None


def new_group_id() -> str:
    """`tg-` and a UUIDv7's 32 hex digits: time-ordered like the other ids, and within the
    36 characters a session's `target_id` holds."""
    return "tg-" + uuid.UUID(new_id()).hex


def get_target_group(
    db: Session, project: str, group_id: str, field: str | None = None
) -> TargetGroupRow:
    return owned_row(db, TargetGroupRow, project, group_id, "target group", field)


def sessions_using(db: Session, group_id: str) -> list[str]:
    return sorted(db.scalars(select(SessionRow.id).where(SessionRow.target_group_id == group_id)))


def check_no_source_is_member(
    db: Session, group_id: str, sources: Iterable[str], field: str
) -> None:
    """A session's sources and its group's members are different ports (docs/elb.md)."""
    source_ids = sorted(set(sources))
    if not source_ids:
        return
    both = db.scalars(
        select(MemberRow.port_id).where(
            MemberRow.group_id == group_id, MemberRow.port_id.in_(source_ids)
        )
    ).first()
    if both is not None:
        raise Invalid(
            f"{field}: port {both} is both a source of the session and a member of target "
            f"group {group_id}: a session's sources and its target's ports must be different"
        )


def create_target_group(db: Session, project: str, spec: TargetGroupSpec) -> TargetGroupRow:
    bump_change(db, project)
    now = utc_now()
    row = TargetGroupRow(
        id=new_group_id(),
        project_id=project,
        name=spec.name,
        description=spec.description,
        created_at=now,
        updated_at=now,
    )
    row.members = []
    db.add(row)
    db.flush()
    if spec.ports:
        _join(db, project, row, spec.ports)
    return row


def update_target_group(
    db: Session, project: str, group_id: str, change: TargetGroupChange
) -> TargetGroupRow:
    # Neither the name nor the description is in any desired state: no host changes.
    row = get_target_group(db, project, group_id)
    if change.name is not None:
        row.name = change.name
    if change.description is not None:
        row.description = change.description
    row.updated_at = utc_now()
    db.flush()
    return row


def delete_target_group(db: Session, project: str, group_id: str) -> None:
    bump_change(db, project)
    row = get_target_group(db, project, group_id)
    users = sessions_using(db, group_id)
    if users:
        raise InUse(
            f"target group {group_id} is the target of session(s) {', '.join(users)}: "
            "delete them or give them another target first"
        )
    db.delete(row)
    db.flush()


def _distinct(port_ids: Sequence[str]) -> list[str]:
    seen: set[str] = set()
    for port_id in port_ids:
        if port_id in seen:
            raise Invalid(f"ports: port {port_id} is named twice")
        seen.add(port_id)
    return list(port_ids)


def _join(db: Session, project: str, row: TargetGroupRow, port_ids: Sequence[str]) -> None:
    port_ids = _distinct(port_ids)
    current = {m.port_id for m in row.members}
    for port_id in port_ids:
        get_port(db, project, port_id, "ports")
        if port_id in current:
            raise Invalid(f"ports: port {port_id} is already a member of target group {row.id}")
    total = len(current) + len(port_ids)
    if total > model.MAX_GROUP_MEMBERS:
        raise QuotaExceeded(
            f"ports: target group {row.id} would have {total} members; at most "
            f"{model.MAX_GROUP_MEMBERS} are allowed"
        )
    for session_id in sessions_using(db, row.id):
        sources = db.scalars(select(SourceRow.port_id).where(SourceRow.session_id == session_id))
        clash = sorted(set(sources) & set(port_ids))
        if clash:
            raise Invalid(
                f"ports: port {clash[0]} is a source of session {session_id}, which mirrors "
                f"to target group {row.id}: a session's sources and its target's ports "
                "must be different"
            )
    free = (n for n in range(model.MAX_GROUP_MEMBERS) if n not in {m.number for m in row.members})
    for port_id, number in zip(port_ids, free, strict=False):
        row.members.append(
            MemberRow(
                group_id=row.id,
                port_id=port_id,
                project_id=project,
                number=number,
                healthy=False,
                last_heartbeat=None,
            )
        )
    row.updated_at = utc_now()
    db.flush()
    bump_hosts(db, project, hosts_showing(db, groups=[row.id]))


def add_members(
    db: Session, project: str, group_id: str, port_ids: Sequence[str]
) -> TargetGroupRow:
    bump_change(db, project)
    row = get_target_group(db, project, group_id)
    _join(db, project, row, port_ids)
    return row


def remove_members(
    db: Session, project: str, group_id: str, port_ids: Sequence[str]
) -> TargetGroupRow:
    bump_change(db, project)
    row = get_target_group(db, project, group_id)
    port_ids = _distinct(port_ids)
    current = {m.port_id: m for m in row.members}
    for port_id in port_ids:
        if port_id not in current:
            raise Invalid(f"ports: port {port_id} is not a member of target group {group_id}")
    users = sessions_using(db, group_id)
    if users and len(port_ids) == len(current):
        raise InUse(
            f"target group {group_id} is the target of session(s) {', '.join(users)}: "
            "it must keep at least one member"
        )
    for port_id in port_ids:
        row.members.remove(current[port_id])
    row.updated_at = utc_now()
    db.flush()
    bump_hosts(db, project, hosts_showing(db, groups=[row.id]))
    return row


# A list's filters, by the domain's names, as columns.
_QUERY_COLUMNS = {
    "id": TargetGroupRow.id,
    "name": TargetGroupRow.name,
}


def list_target_groups(
    db: Session,
    project: str,
    where: Mapping[str, Sequence[Any]],
    limit: int | None,
    marker: str | None,
) -> RowPage:
    return list_owned(db, TargetGroupRow, project, _QUERY_COLUMNS, where, limit, marker)
