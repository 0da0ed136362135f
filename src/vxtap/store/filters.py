"""Mirror filters over the database (docs/behaviour.md §1.6); in the caller's transaction."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from vxtap.store.common import (
    RowPage,
    bump_change,
    bump_hosts,
    hosts_showing,
    insert_row,
    list_owned,
    new_id,
    owned_row,
    utc_now,
)
from vxtap.store.errors import InUse
from vxtap.store.schema import FilterRow, SessionRow


@dataclass(frozen=True)
class FilterSpec:
    """A new mirror filter."""

    name: str
    description: str = ""


@dataclass(frozen=True)
class FilterChange:
    """What an update sets; None leaves a field as it is."""

    name: str | None = None
    description: str | None = None


def get_filter(db: Session, project: str, filter_id: str, field: str | None = None) -> FilterRow:
    return owned_row(db, FilterRow, project, filter_id, "mirror filter", field)


def create_filter(db: Session, project: str, spec: FilterSpec) -> FilterRow:
    bump_change(db, project)
    now = utc_now()
    row = FilterRow(
        id=new_id(),
        project_id=project,
        name=spec.name,
        description=spec.description or "",
        created_at=now,
        updated_at=now,
    )
    row.rules = []
    return insert_row(db, row)


def update_filter(db: Session, project: str, filter_id: str, change: FilterChange) -> FilterRow:
    bump_change(db, project)
    row = get_filter(db, project, filter_id)
    if change.name not in (None, row.name):  # the name is in the desired state
        bump_hosts(db, project, hosts_showing(db, filters=[row.id]))
    if change.name is not None:
        row.name = change.name
    if change.description is not None:
        row.description = change.description
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


# A list's filters, by the domain's names (the same as the columns' here).
_QUERY_COLUMNS = {
    name: getattr(FilterRow, name)
    for name in ("id", "name", "description", "created_at", "updated_at")
}


def list_filters(
    db: Session,
    project: str,
    where: Mapping[str, Sequence[Any]],
    limit: int | None,
    marker: str | None,
) -> RowPage:
    return list_owned(db, FilterRow, project, _QUERY_COLUMNS, where, limit, marker)
