"""Mirror filter rules over the database: priorities, quotas (docs/behaviour.md §1.6);
in the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from vxtap import model
from vxtap.store.common import (
    KEEP,
    Keep,
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
from vxtap.store.errors import DuplicatePriority, Invalid, QuotaExceeded
from vxtap.store.filters import get_filter
from vxtap.store.schema import RuleRow


@dataclass(frozen=True)
class RuleSpec:
    """A new rule of a mirror filter; ports are range texts ("80-443"), CIDRs canonical."""

    filter_id: str
    direction: model.Direction
    priority: int
    action: model.Action
    ethertype: model.EtherType
    protocol: model.Protocol
    source_cidr: str | None = None
    destination_cidr: str | None = None
    source_ports: str | None = None
    destination_ports: str | None = None
    description: str = ""


@dataclass(frozen=True)
class RuleChange:
    """What an update sets: `KEEP` leaves a field as it is, None clears an optional one.
    The filter and the direction are fixed at creation."""

    priority: int | Keep = KEEP
    action: model.Action | Keep = KEEP
    ethertype: model.EtherType | Keep = KEEP
    protocol: model.Protocol | Keep = KEEP
    source_cidr: str | Keep | None = KEEP
    destination_cidr: str | Keep | None = KEEP
    source_ports: str | Keep | None = KEEP
    destination_ports: str | Keep | None = KEEP
    description: str | Keep | None = KEEP


def get_rule(db: Session, project: str, rule_id: str) -> RuleRow:
    return owned_row(db, RuleRow, project, rule_id, "mirror filter rule", None)


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


# The fields a rule's spec and change share, each with its column.
RULE_COLUMNS = {
    "priority": "priority",
    "action": "action",
    "ethertype": "ethertype",
    "protocol": "protocol",
    "source_cidr": "source_cidr_block",
    "destination_cidr": "destination_cidr_block",
    "source_ports": "source_port_range",
    "destination_ports": "destination_port_range",
    "description": "description",
}


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
    spec: RuleSpec,
    *,
    quota: int = model.DEFAULT_MAX_RULES_PER_DIRECTION,
) -> RuleRow:
    """`quota`: the most rules a filter may have in one direction."""
    bump_change(db, project)
    parent = get_filter(db, project, spec.filter_id, "traffic_mirror_filter_id")
    now = utc_now()
    row = RuleRow(
        id=new_id(),
        project_id=project,
        filter_id=parent.id,
        direction=spec.direction,
        created_at=now,
        updated_at=now,
        description="",
        source_cidr_block=None,
        destination_cidr_block=None,
        source_port_range=None,
        destination_port_range=None,
    )
    for name, column in RULE_COLUMNS.items():
        if getattr(spec, name) is not None:
            setattr(row, column, getattr(spec, name))
    domain_rule(row)
    _check_rule_quota(db, row, quota)
    _check_rule_priority_free(db, row)
    parent.updated_at = now
    bump_hosts(db, project, hosts_showing(db, filters=[parent.id]))
    return insert_row(db, row)


def update_rule(db: Session, project: str, rule_id: str, change: RuleChange) -> RuleRow:
    bump_change(db, project)
    row = get_rule(db, project, rule_id)
    # Validate the merged result before touching the row, so a refusal changes nothing.
    merged = {column: getattr(row, column) for column in RULE_COLUMNS.values()}
    for name, column in RULE_COLUMNS.items():
        if getattr(change, name) is not KEEP:
            merged[column] = getattr(change, name)
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


# A list's filters, by the domain's names (wire.query renames Huawei's), as columns.
_QUERY_COLUMNS = {
    "id": RuleRow.id,
    "description": RuleRow.description,
    "filter_id": RuleRow.filter_id,
    "direction": RuleRow.direction,
    "protocol": RuleRow.protocol,
    "ethertype": RuleRow.ethertype,
    "source_cidr": RuleRow.source_cidr_block,
    "destination_cidr": RuleRow.destination_cidr_block,
    "source_ports": RuleRow.source_port_range,
    "destination_ports": RuleRow.destination_port_range,
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
    return list_owned(db, RuleRow, project, _QUERY_COLUMNS, where, limit, marker)
