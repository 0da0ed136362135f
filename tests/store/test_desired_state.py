"""The desired-state build (plain columns straight to JSON) answers exactly what building
it through the ORM and `model.DesiredState` answered: the same body bytes and revision."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.responses import JSONResponse

from vxtap import model
from vxtap.store import agent_view
from vxtap.store import filters as filter_store
from vxtap.store import ports as port_store
from vxtap.store import rules as rule_store
from vxtap.store import sessions as session_store
from vxtap.store import target_groups as group_store
from vxtap.store.db import Store
from vxtap.store.filters import FilterSpec
from vxtap.store.ports import PortSpec
from vxtap.store.rules import RuleSpec
from vxtap.store.schema import FilterRow, MemberRow, PortRow, SessionRow, SourceRow, TargetGroupRow
from vxtap.store.sessions import SessionChange, SessionSpec
from vxtap.store.target_groups import TargetGroupSpec
from vxtap.wire.fields import parse_cidr, parse_port_range


def _reference_port(row: PortRow) -> model.Port:
    return model.Port(
        id=row.id,
        host=row.host,
        device=row.device,
        mac=row.mac,
        ipv4=tuple(row.ipv4),
        ipv6=tuple(row.ipv6),
    )


def reference_state(db: Session, project: str, host: str) -> model.DesiredState:
    """The build this replaced (commit 3370ba3): ORM rows, validated domain values."""
    ports = list(
        db.scalars(
            select(PortRow)
            .where(PortRow.project_id == project, PortRow.host == host)
            .order_by(PortRow.id)
        )
    )
    port_ids = [p.id for p in ports]
    sessions = (
        list(
            db.scalars(
                select(SessionRow)
                .where(
                    SessionRow.id.in_(
                        select(SourceRow.session_id).where(SourceRow.port_id.in_(port_ids))
                    )
                )
                .order_by(SessionRow.priority, SessionRow.id)
            )
        )
        if port_ids
        else []
    )
    filter_ids = sorted({s.filter_id for s in sessions})
    group_ids = sorted({s.target_id for s in sessions if s.target_type == "elb"})
    groups = [
        db.get_one(TargetGroupRow, group_id) for group_id in group_ids
    ]  # members load ordered by number
    target_ids = sorted(
        {s.target_id for s in sessions if s.target_type == "eni"}
        | {m.port_id for g in groups for m in g.members}
    )
    filters = (
        list(
            db.scalars(select(FilterRow).where(FilterRow.id.in_(filter_ids)).order_by(FilterRow.id))
        )
        if filter_ids
        else []
    )
    targets = (
        list(db.scalars(select(PortRow).where(PortRow.id.in_(target_ids)).order_by(PortRow.id)))
        if target_ids
        else []
    )
    content: dict[str, Any] = {
        "ports": tuple(_reference_port(p) for p in ports),
        "sessions": tuple(
            model.Session(
                id=s.id,
                name=s.name,
                filter_id=s.filter_id,
                sources=tuple(src.port_id for src in s.sources),
                target_id=s.target_id,
                target_kind=model.TargetKind(s.target_type),
                vni=s.virtual_network_id,
                packet_length=s.packet_length,
                priority=s.priority,
                enabled=s.enabled,
            )
            for s in sessions
        ),
        "filters": tuple(
            model.Filter(
                id=f.id, name=f.name, rules=tuple(rule_store.domain_rule(r) for r in f.rules)
            )
            for f in filters
        ),
        "targets": tuple(_reference_port(t) for t in targets),
        "groups": tuple(
            model.TargetGroup(
                id=g.id,
                members=tuple(
                    model.GroupMember(port_id=m.port_id, number=m.number, healthy=m.healthy)
                    for m in g.members
                ),
            )
            for g in groups
        ),
    }
    unrevised = model.DesiredState(host=host, revision="", **content)
    revision = hashlib.sha256(
        json.dumps(unrevised.model_dump(mode="json"), sort_keys=True).encode()
    ).hexdigest()[:16]
    return unrevised.model_copy(update={"revision": revision})


def _rule(filter_id: str, direction: str, priority: int, **fields: Any) -> RuleSpec:
    """A rule as the API stores it (CIDRs and port ranges canonicalised)."""
    parsed = {
        key: (parse_cidr if key.endswith("cidr") else parse_port_range)(value)
        for key, value in fields.items()
        if key not in ("action", "ethertype", "protocol")
    }
    return RuleSpec(
        filter_id=filter_id,
        direction=model.Direction(direction),
        priority=priority,
        action=model.Action(fields.get("action", "accept")),
        ethertype=model.EtherType(fields.get("ethertype", "IPv4")),
        protocol=model.Protocol(fields.get("protocol", "ALL")),
        **parsed,
    )


def _session(
    name: str, filter_id: str, sources: list[str], target: str, priority: int, **fields: Any
) -> SessionSpec:
    return SessionSpec(
        name, filter_id, tuple(sources), target, model.TargetKind.ENI, priority, **fields
    )


def fill_varied(store: Store) -> None:
    """Two hosts sharing sessions, local and remote targets, a target group (members out
    of joining order, one healthy), every kind of rule, filters without rules or unused,
    a moved priority and removed sources."""
    with store.write() as db:
        local = {
            p.device: p.id
            for p in port_store.register_host_ports(
                db,
                "p",
                "h",
                [
                    PortSpec(
                        device="eth0",
                        mac="fa:16:3e:00:00:01",
                        ipv4=("10.0.0.1", "10.0.0.2"),
                        ipv6=("2001:db8::1",),
                    ),
                    PortSpec(device="eth1"),
                    PortSpec(device="eth2", ipv4=("10.0.0.3",)),
                    PortSpec(device="eth3", ipv4=("10.0.0.4",)),
                ],
            )
        }
        remote = {
            p.device: p.id
            for p in port_store.register_host_ports(
                db, "p", "h2", [PortSpec(device="x0", ipv4=("10.0.1.1",))]
            )
        }
        collector = port_store.create_port(
            db, "p", "c", PortSpec(device="eth0", ipv6=("2001:db8:ff::2",))
        ).id
        rich = filter_store.create_filter(db, "p", FilterSpec("rich", "every kind")).id
        bare = filter_store.create_filter(db, "p", FilterSpec("bare")).id
        unused = filter_store.create_filter(db, "p", FilterSpec("unused")).id
        for rule in (
            _rule(rich, "ingress", 30, protocol="TCP", destination_ports="80-80"),
            _rule(rich, "egress", 5, protocol="ICMP", source_cidr="192.168.7.9/16"),
            _rule(
                rich,
                "ingress",
                2,
                action="reject",
                protocol="UDP",
                source_ports="1000-2000",
                destination_ports="53-53",
                destination_cidr="10.0.0.0/8",
            ),
            _rule(
                rich,
                "egress",
                65535,
                ethertype="IPv6",
                protocol="ICMPV6",
                source_cidr="2001:DB8:0::1/32",
                destination_cidr="::/0",
            ),
            _rule(rich, "ingress", 1),
            _rule(unused, "ingress", 1, protocol="TCP"),
        ):
            rule_store.create_rule(db, "p", rule)
        shared = session_store.create_session(
            db,
            "p",
            _session("shared", rich, [remote["x0"], local["eth0"]], collector, 7, vni=0),
        ).id
        session_store.create_session(
            db,
            "p",
            _session(
                "local target",
                bare,
                [local["eth2"]],
                local["eth1"],
                3,
                vni=16_777_215,
                packet_length=1460,
                enabled=False,
            ),
        )
        session_store.create_session(
            db, "p", _session("remote only", unused, [remote["x0"]], collector, 1)
        )
        moved = session_store.create_session(
            db, "p", _session("moved", rich, [local["eth1"], local["eth3"]], collector, 9)
        ).id
        same_priority = session_store.create_session(
            db, "p", _session("same priority", bare, [local["eth0"]], collector, 8)
        ).id
    with store.write() as db:
        session_store.update_session(db, "p", moved, SessionChange(priority=7, description="moved"))
        session_store.remove_sources(db, "p", moved, [local["eth1"]])
        session_store.add_sources(db, "p", same_priority, [local["eth3"], local["eth1"]])
        session_store.update_session(db, "p", shared, SessionChange(name="shared, renamed"))
    with store.write() as db:
        collectors = [
            port_store.create_port(
                db, "p", "c", PortSpec(device=f"col{i}", ipv4=(f"10.9.0.{i}",))
            ).id
            for i in range(3)
        ]
        group = group_store.create_target_group(
            db, "p", TargetGroupSpec("ids", ports=tuple(collectors))
        ).id
        group_store.remove_members(db, "p", group, [collectors[0]])
        group_store.add_members(db, "p", group, [collectors[0]])  # number 0 again
        db.get_one(MemberRow, (group, collectors[2])).healthy = True
        port = local["eth3"]
        session_store.create_session(
            db,
            "p",
            SessionSpec("to a group", bare, (port,), group, model.TargetKind.ELB, 20),
        )
        # An unused group is in no state.
        group_store.create_target_group(db, "p", TargetGroupSpec("idle", ports=(collector,)))


def body(content: Any) -> bytes:
    """The desired-state endpoint's body for this content."""
    return bytes(JSONResponse(content).body)


def test_the_build_answers_what_the_model_did(store: Store) -> None:
    fill_varied(store)
    for host in ("h", "h2", "c", "nobody"):
        with store.read() as db:
            expected = reference_state(db, "p", host)
        with store.read_rows() as connection:
            built = agent_view.desired_state(connection, "p", host)
        assert body(built) == body(expected.model_dump(mode="json")), host
        assert built["revision"] == expected.revision
        # And it reads back as the model the agent parses, unchanged.
        assert model.DesiredState.model_validate(built) == expected
    # The state compared is the varied one meant: sessions by priority, rules by
    # direction then priority, sources by position, references of the host's sessions only.
    with store.read_rows() as connection:
        state = agent_view.desired_state(connection, "p", "h")
    assert [s["priority"] for s in state["sessions"]] == [3, 7, 7, 8, 20]
    assert {s["name"] for s in state["sessions"]} == {
        "local target",
        "moved",
        "shared, renamed",
        "same priority",
        "to a group",
    }
    assert [s["target_kind"] for s in state["sessions"]] == ["eni"] * 4 + ["elb"]
    (group,) = state["groups"]
    assert [(m["number"], m["healthy"]) for m in group["members"]] == [
        (0, False),
        (1, False),
        (2, True),
    ]
    assert [len(s["sources"]) for s in state["sessions"] if s["name"] == "same priority"] == [3]
    rules = {
        f["name"]: [(r["direction"], r["priority"]) for r in f["rules"]] for f in state["filters"]
    }
    assert rules == {
        "rich": [("egress", 5), ("egress", 65535), ("ingress", 1), ("ingress", 2), ("ingress", 30)],
        "bare": [],
    }
    assert len(state["ports"]) == 4 and len(state["targets"]) == 2 + 3
