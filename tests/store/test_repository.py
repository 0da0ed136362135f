"""The repository's rules on both databases: deleting filters with their rules, how
integrity errors are answered, counter reports and their sums, the rules quota."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from vxtap import model
from vxtap.model import TargetKind
from vxtap.store import agent_view, common
from vxtap.store import filters as filter_store
from vxtap.store import ports as port_store
from vxtap.store import rules as rule_store
from vxtap.store import sessions as session_store
from vxtap.store.db import Store
from vxtap.store.errors import Conflict, InUse, NotFound, QuotaExceeded
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


# -- deleting a filter ------------------------------------------------------------------


def test_a_filter_no_session_uses_is_deleted_with_its_rules(store: Store) -> None:
    world = make_world(store)
    # While a session uses it: 409 in use, nothing deleted.
    with pytest.raises(InUse) as info:
        store.transaction(lambda db: filter_store.delete_filter(db, "p", world["filter"]))
    assert world["session"] in info.value.message
    assert rule_count(store, world["filter"]) == 2
    store.transaction(lambda db: session_store.delete_session(db, "p", world["session"]))
    store.transaction(lambda db: filter_store.delete_filter(db, "p", world["filter"]))
    assert rule_count(store, world["filter"]) == 0
    with pytest.raises(NotFound), store.read() as db:
        rule_store.get_rule(db, "p", world["ingress"])


def test_an_integrity_error_is_never_answered_as_a_concurrent_change(store: Store) -> None:
    """A violation no check words is a bug in the checks: raised (500, logged), not a 409
    asking the client to retry what can never succeed."""
    world = make_world(store)
    attempts: list[int] = []

    def insert_rule(db: Session, filter_id: str | None) -> None:
        attempts.append(1)
        db.execute(
            insert(RuleRow),
            {
                "id": common.new_id(),
                "project_id": "p",
                "filter_id": filter_id,
                "direction": "ingress",
                "priority": 7,
                "action": "accept",
                "ethertype": "IPv4",
                "protocol": "ALL",
                "description": "",
                "created_at": common.utc_now(),
                "updated_at": common.utc_now(),
            },
        )

    # NOT NULL: no retry can cure it.
    with pytest.raises(IntegrityError):
        store.transaction(lambda db: insert_rule(db, None))
    assert len(attempts) == 1
    # A reference missing at the write: retried (the checks then word it), and if the
    # write itself is wrong, raised after the retries.
    attempts.clear()
    with pytest.raises(IntegrityError):
        store.transaction(lambda db: insert_rule(db, "no-such-filter"))
    assert len(attempts) == 5
    assert rule_count(store, world["filter"]) == 2


# -- counter reports ----------------------------------------------------------------------

COUNTER_MAX = 2**63 - 1


def report(store: Store, host: str, sessions: dict[str, int], rules: dict[str, int]) -> None:
    def counters(values: dict[str, int]) -> dict[str, dict[str, int]]:
        return {k: {"packets": v, "bytes": v} for k, v in values.items()}

    store.transaction(
        lambda db: agent_view.put_counters(db, "p", host, counters(sessions), counters(rules)),
    )


def stats(store: Store) -> dict[str, Any]:
    with store.read() as db:
        return agent_view.session_stats(db, "p")


def test_counters_keep_only_what_the_hosts_desired_state_holds(store: Store) -> None:
    world = make_world(store)
    with store.write() as db:  # a filter and rule no session of host h uses
        idle = filter_store.create_filter(db, "p", FilterSpec("idle")).id
        idle_rule = rule_store.create_rule(db, "p", rule_fields(idle, "ingress", 1)).id
    made_up = "01a24000-0000-7000-8000-000000000000"
    everything = {world["session"]: 5, made_up: 6}
    rules = {world["ingress"]: 7, world["egress"]: 8, idle_rule: 9, made_up: 10}
    report(store, "h", everything, rules)
    report(store, "h-t", everything, rules)  # the target's host serves no session
    for ghost in range(30):  # hosts with no port at all
        report(store, f"ghost{ghost}", everything, rules)
    answer = stats(store)
    assert answer["sessions"] == {world["session"]: {"packets": 5, "bytes": 5}}
    assert answer["rules"] == {
        world["ingress"]: {"packets": 7, "bytes": 7},
        world["egress"]: {"packets": 8, "bytes": 8},
    }
    assert set(answer["hosts"]) == {"h", "h-t"}


def test_session_stats_sum_past_64_bits_exactly(store: Store) -> None:
    """Two hosts serving one session, each near the top of a 64-bit signed counter: the
    sum is exact (SQLite's sum() failed with "integer overflow", a 500)."""
    world = make_world(store)
    with store.write() as db:
        port = PortSpec(device="eth0", ipv4=("10.0.0.2",))
        second = port_store.create_port(db, "p", "h2", port).id
        session_store.add_sources(db, "p", world["session"], [second])
    report(store, "h", {world["session"]: COUNTER_MAX}, {world["ingress"]: COUNTER_MAX})
    report(store, "h2", {world["session"]: COUNTER_MAX}, {world["ingress"]: 2**32 + 1})
    answer = stats(store)
    total = {"packets": 2 * COUNTER_MAX, "bytes": 2 * COUNTER_MAX}
    assert answer["sessions"][world["session"]] == total
    assert answer["rules"][world["ingress"]] == {
        "packets": COUNTER_MAX + 2**32 + 1,
        "bytes": COUNTER_MAX + 2**32 + 1,
    }


# -- the rules quota --------------------------------------------------------------------


def test_rules_per_filter_and_direction_stop_at_the_quota(store: Store) -> None:
    quota = model.DEFAULT_MAX_RULES_PER_DIRECTION
    with store.write() as db:
        filter_id = filter_store.create_filter(db, "p", FilterSpec("full")).id
        for priority in range(1, quota + 1):
            rule_store.create_rule(db, "p", rule_fields(filter_id, "ingress", priority))
    with pytest.raises(QuotaExceeded) as info:
        store.transaction(
            lambda db: rule_store.create_rule(db, "p", rule_fields(filter_id, "ingress", 9999))
        )
    assert f"has {quota} ingress rules" in info.value.message
    assert rule_count(store, filter_id) == quota
    # The other direction has its own quota; a smaller quota counts the same rows.
    store.transaction(
        lambda db: rule_store.create_rule(db, "p", rule_fields(filter_id, "egress", 1))
    )
    with pytest.raises(QuotaExceeded):
        store.transaction(
            lambda db: rule_store.create_rule(
                db, "p", rule_fields(filter_id, "egress", 2), quota=1
            ),
        )


def test_the_rules_quota_holds_under_concurrent_creates(store: Store) -> None:
    """No constraint holds the quota: the project's change counter, which every rule
    write takes first, serializes the count and the insert."""
    with store.write() as db:
        filter_id = filter_store.create_filter(db, "p", FilterSpec("raced")).id
    outcomes: list[str] = []

    def create(priority: int) -> None:
        try:
            store.transaction(
                lambda db: rule_store.create_rule(
                    db, "p", rule_fields(filter_id, "ingress", priority), quota=5
                ),
            )
            outcomes.append("created")
        except Conflict as refusal:
            outcomes.append(type(refusal).__name__)

    threads = [threading.Thread(target=create, args=(p,)) for p in range(1, 17)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["QuotaExceeded"] * 11 + ["created"] * 5
    assert rule_count(store, filter_id) == 5
