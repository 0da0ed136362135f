"""ORM rows rendered as answers (`vxtap.wire.answers` declares their shapes).

Plain dicts built by hand: validating each answer again through a model would cost
as much as the request itself on long lists.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from vxtap.store.schema import FilterRow, PortRow, RuleRow, TargetGroupRow


def timestamp(value: datetime) -> str:
    """`2024-09-10T09:54:28Z` (stored naive UTC, whole seconds); isoformat, not the slower
    strftime, as every listed row pays it twice."""
    return value.isoformat(timespec="seconds") + "Z"


def rule_json(row: RuleRow) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": row.id,
        "project_id": row.project_id,
        "traffic_mirror_filter_id": row.filter_id,
        "direction": row.direction,
        "priority": row.priority,
        "action": row.action,
        "ethertype": row.ethertype,
        "protocol": row.protocol,
        "description": row.description,
        "created_at": timestamp(row.created_at),
        "updated_at": timestamp(row.updated_at),
    }
    # Absent CIDRs and port ranges are absent from the answer too, as Huawei does.
    for key in (
        "source_cidr_block",
        "destination_cidr_block",
        "source_port_range",
        "destination_port_range",
    ):
        value = getattr(row, key)
        if value is not None:
            body[key] = value
    return body


def filter_json(row: FilterRow) -> dict[str, Any]:
    rules = sorted(row.rules, key=lambda r: r.priority)
    return {
        "id": row.id,
        "project_id": row.project_id,
        "name": row.name,
        "description": row.description,
        "ingress_rules": [rule_json(r) for r in rules if r.direction == "ingress"],
        "egress_rules": [rule_json(r) for r in rules if r.direction == "egress"],
        "type": "eni",
        "created_at": timestamp(row.created_at),
        "updated_at": timestamp(row.updated_at),
    }


def session_json(row: Any, sources: list[str]) -> dict[str, Any]:
    """From a row of `vxtap.store.sessions.SESSION_COLUMNS_READ` (in that order) and its sources.

    Unpacked by position: on the hot path (lists of 2,000) that is much cheaper than
    attribute access on SQLAlchemy rows.
    """
    (
        session_id,
        project_id,
        name,
        description,
        filter_id,
        target_id,
        target_type,
        vni,
        packet_length,
        priority,
        enabled,
        source_type,
        created_at,
        updated_at,
    ) = row
    return {
        "id": session_id,
        "project_id": project_id,
        "name": name,
        "description": description,
        "traffic_mirror_filter_id": filter_id,
        "traffic_mirror_sources": sources,
        "traffic_mirror_target_id": target_id,
        "traffic_mirror_target_type": target_type,
        "virtual_network_id": vni,
        "packet_length": packet_length,
        "priority": priority,
        "enabled": enabled,
        "type": source_type,
        "created_at": timestamp(created_at),
        "updated_at": timestamp(updated_at),
    }


def target_group_json(row: TargetGroupRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "project_id": row.project_id,
        "name": row.name,
        "description": row.description,
        "members": [
            {
                "port_id": m.port_id,
                "number": m.number,
                "healthy": m.healthy,
                "last_heartbeat": None if m.last_heartbeat is None else timestamp(m.last_heartbeat),
            }
            for m in sorted(row.members, key=lambda m: m.number)
        ],
        "created_at": timestamp(row.created_at),
        "updated_at": timestamp(row.updated_at),
    }


def port_json(row: PortRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "host": row.host,
        "device": row.device,
        "mac": row.mac,
        "ipv4": list(row.ipv4),
        "ipv6": list(row.ipv6),
    }


def v1_port_json(row: PortRow) -> dict[str, Any]:
    """Huawei's (Neutron-style) v1 port shape."""
    return {
        "id": row.id,
        "name": row.device,
        "project_id": row.project_id,
        "tenant_id": row.project_id,
        "mac_address": row.mac or "",
        "fixed_ips": [{"ip_address": ip, "subnet_id": ""} for ip in [*row.ipv4, *row.ipv6]],
        "binding:host_id": row.host,
        "device_owner": "",
        "device_id": "",
        "network_id": "",
        "admin_state_up": True,
        "status": "ACTIVE",
        "created_at": timestamp(row.created_at),
        "updated_at": timestamp(row.updated_at),
    }
