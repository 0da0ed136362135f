"""A small world in the store for tests: a filter with a rule per direction and a session
from a port on one host to a target on another."""

from __future__ import annotations

from sqlalchemy import func, select

from vxtap import model
from vxtap.model import TargetKind
from vxtap.store import filters as filter_store
from vxtap.store import ports as port_store
from vxtap.store import rules as rule_store
from vxtap.store import sessions as session_store
from vxtap.store.db import Store
from vxtap.store.filters import FilterSpec
from vxtap.store.ports import PortSpec
from vxtap.store.rules import RuleSpec
from vxtap.store.schema import RuleRow
from vxtap.store.sessions import SessionSpec


def rule_fields(filter_id: str, direction: str, priority: int) -> RuleSpec:
    return RuleSpec(
        filter_id=filter_id,
        direction=model.Direction(direction),
        priority=priority,
        action=model.Action.ACCEPT,
        ethertype=model.EtherType.IPV4,
        protocol=model.Protocol.TCP,
    )


def make_world(store: Store, project: str = "p", host: str = "h") -> dict[str, str]:
    """A filter with a rule per direction, a session from a port on `host` to a target."""
    with store.write() as db:
        port = PortSpec(device="eth0", ipv4=("10.0.0.1",))
        source = port_store.create_port(db, project, host, port).id
        target = port_store.create_port(db, project, f"{host}-t", port).id
        filter_id = filter_store.create_filter(db, project, FilterSpec("f")).id
        ingress = rule_store.create_rule(db, project, rule_fields(filter_id, "ingress", 1)).id
        egress = rule_store.create_rule(db, project, rule_fields(filter_id, "egress", 1)).id
        spec = SessionSpec("s", filter_id, (source,), target, TargetKind.ENI, priority=1)
        session = session_store.create_session(db, project, spec).id
    return {
        "source": source,
        "target": target,
        "filter": filter_id,
        "ingress": ingress,
        "egress": egress,
        "session": session,
    }


def rule_count(store: Store, filter_id: str) -> int:
    with store.read() as db:
        return int(
            db.scalar(
                select(func.count()).select_from(RuleRow).where(RuleRow.filter_id == filter_id)
            )
            or 0
        )
