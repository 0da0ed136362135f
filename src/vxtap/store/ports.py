"""Ports (the NICs of hosts) over the database; in the caller's transaction."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
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
from vxtap.store.errors import AlreadyExists, InUse
from vxtap.store.schema import MemberRow, PortRow, SessionRow, SourceRow


@dataclass(frozen=True)
class PortSpec:
    """One interface of a host, as its agent reports it or an operator creates it;
    addresses canonical (the routes validated them)."""

    device: str
    ipv4: tuple[str, ...] = ()
    ipv6: tuple[str, ...] = ()
    mac: str | None = None


def get_port(db: Session, project: str, port_id: str, field: str | None = None) -> PortRow:
    return owned_row(db, PortRow, project, port_id, "port", field)


def _port_by_device(db: Session, project: str, host: str, device: str) -> PortRow | None:
    return db.scalar(
        select(PortRow).where(
            PortRow.project_id == project, PortRow.host == host, PortRow.device == device
        )
    )


def register_host_ports(
    db: Session, project: str, host: str, ports: Iterable[PortSpec]
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
        row = existing.get(port.device)
        if row is None:
            row = PortRow(
                id=new_id(), project_id=project, host=host, device=port.device, created_at=now
            )
            db.add(row)
            existing[row.device] = row
        if (row.mac, row.ipv4, row.ipv6) != (port.mac, list(port.ipv4), list(port.ipv6)):
            row.mac, row.ipv4, row.ipv6 = port.mac, list(port.ipv4), list(port.ipv6)
            row.updated_at = now
            changed.append(row.id)
        elif row.updated_at is None:
            row.updated_at = now
    db.flush()
    if changed:  # a re-registration that changes nothing wakes no one
        bump_hosts(db, project, hosts_showing(db, ports=changed) | {host})
    return sorted(existing.values(), key=lambda r: r.id)


def create_port(db: Session, project: str, host: str, spec: PortSpec) -> PortRow:
    bump_change(db, project)
    device = spec.device
    other = _port_by_device(db, project, host, device)
    if other is not None:
        raise AlreadyExists(f"port {host}/{device} exists already (id {other.id})")
    now = utc_now()
    row = PortRow(
        id=new_id(),
        project_id=project,
        host=host,
        device=device,
        mac=spec.mac,
        ipv4=list(spec.ipv4),
        ipv6=list(spec.ipv6),
        created_at=now,
        updated_at=now,
    )
    bump_hosts(db, project, [host])
    return insert_row(db, row)


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
    groups = sorted(db.scalars(select(MemberRow.group_id).where(MemberRow.port_id == port_id)))
    if groups:
        raise InUse(
            f"port {port_id} is a member of target group(s) {', '.join(groups)}: "
            "remove it from them first"
        )
    bump_hosts(db, project, [row.host])
    db.delete(row)
    db.flush()


# A list's filters, by the domain's names (wire.query renames Huawei's), as columns.
_QUERY_COLUMNS = {
    "id": PortRow.id,
    "device": PortRow.device,
    "mac": PortRow.mac,
    "host": PortRow.host,
}


def list_ports(
    db: Session,
    project: str,
    where: Mapping[str, Sequence[Any]],
    limit: int | None,
    marker: str | None,
) -> RowPage:
    return list_owned(db, PortRow, project, _QUERY_COLUMNS, where, limit, marker)
