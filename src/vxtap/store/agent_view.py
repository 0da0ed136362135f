"""What agents read and report: a host's desired state, counters, session statistics.

Core selects on the read transaction's connection (the hot paths of the API).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import bindparam, delete, func, insert, literal_column, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from vxtap.store.common import utc_now
from vxtap.store.schema import CounterRow, FilterRow, HostReportRow, MemberRow, PortRow, RuleRow
from vxtap.store.sessions import SESSIONS, SOURCES

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
MEMBERS = MemberRow.__table__.c

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
        SESSIONS.target_type,
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
# (session, member port) of the host's sessions' target groups: member counters' keys.
_HOST_SESSION_MEMBERS = select(SESSIONS.id, MEMBERS.port_id).where(
    MEMBERS.group_id == SESSIONS.target_group_id, SESSIONS.id.in_(_HOST_SESSIONS)
)
_STATE_GROUP_IDS = select(SESSIONS.target_group_id).where(SESSIONS.id.in_(_HOST_SESSIONS))
_STATE_MEMBERS = (
    select(MEMBERS.group_id, MEMBERS.port_id, MEMBERS.number, MEMBERS.healthy)
    .where(MEMBERS.group_id.in_(_STATE_GROUP_IDS))
    .order_by(MEMBERS.group_id, MEMBERS.number)
)
# The sessions' target ports, and every member port of their groups.
_STATE_TARGETS = (
    select(*_PORT_COLUMNS)
    .where(
        PORTS.id.in_(select(SESSIONS.target_port_id).where(SESSIONS.id.in_(_HOST_SESSIONS)))
        | PORTS.id.in_(select(MEMBERS.port_id).where(MEMBERS.group_id.in_(_STATE_GROUP_IDS)))
    )
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
    the filters, target ports and target groups (with their member ports) those sessions
    name, as the JSON document of
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
            "target_kind": target_kind,
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
            target_kind,
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
    members: dict[str, list[dict[str, Any]]] = {}
    for group_id, port_id, number, healthy in db.execute(_STATE_MEMBERS, where).all():
        members.setdefault(group_id, []).append(
            {"port_id": port_id, "number": number, "healthy": bool(healthy)}
        )
    groups = [{"id": group_id, "members": found} for group_id, found in sorted(members.items())]
    state: dict[str, Any] = {
        "host": host,
        "revision": "",
        "ports": ports,
        "sessions": sessions,
        "filters": filters,
        "targets": targets,
        "groups": groups,
    }
    state["revision"] = hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()[:16]
    return state


def put_counters(
    db: Session,
    project: str,
    host: str,
    sessions: Mapping[str, Mapping[str, int]],
    rules: Mapping[str, Mapping[str, int]],
    members: Mapping[str, Mapping[str, int]] | None = None,
) -> None:
    """Replace the host's latest report (totals since its kernel state was created).

    Only what the host's desired state holds is kept: its sessions (a source port on
    the host), their filters' rules, and the members of their target groups
    ("<session id>/<member port id>"). Anything else (an id that does not exist, was
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
    if members:
        pairs = {f"{s}/{p}" for s, p in db.execute(_HOST_SESSION_MEMBERS, where).all()}
        members = {k: v for k, v in members.items() if k in pairs}
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
            "unplaced_packets": value.get("unplaced_packets", 0),
            "unplaced_bytes": value.get("unplaced_bytes", 0),
        }
        for kind, values in (("session", sessions), ("rule", rules), ("member", members or {}))
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


_STATS_KEY = {"session": "sessions", "rule": "rules", "member": "members"}


# Summed per (kind, object) over the hosts' reports.
_SUMMED = ("packets", "bytes", "uncut_packets", "uncut_bytes", "unplaced_packets", "unplaced_bytes")
# Shown for sessions only, and only when there are any.
_SESSION_ONLY = (("uncut_packets", "uncut_bytes"), ("unplaced_packets", "unplaced_bytes"))


def session_stats(db: Session, project: str) -> dict[str, Any]:
    stats: dict[str, Any] = {"sessions": {}, "rules": {}, "hosts": {}, "members": {}}
    sums = [part for name in _SUMMED for part in _split_sum(getattr(CounterRow, name))]
    for kind, object_id, *halves in db.execute(
        select(CounterRow.kind, CounterRow.object_id, *sums)
        .where(CounterRow.project_id == project)
        .group_by(CounterRow.kind, CounterRow.object_id)
        .order_by(CounterRow.kind, CounterRow.object_id)
    ):
        summed = {
            name: (int(halves[2 * n]) << 32) + int(halves[2 * n + 1])
            for n, name in enumerate(_SUMMED)
        }
        totals = {"packets": summed["packets"], "bytes": summed["bytes"]}
        for pair in _SESSION_ONLY:
            if kind == "session" and any(summed[name] for name in pair):
                totals.update({name: summed[name] for name in pair})
        stats[_STATS_KEY[kind]][object_id] = totals
    for host, reported_at in db.execute(
        select(HostReportRow.host, HostReportRow.reported_at)
        .where(HostReportRow.project_id == project)
        .order_by(HostReportRow.host)
    ):
        stats["hosts"][host] = reported_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    return stats
