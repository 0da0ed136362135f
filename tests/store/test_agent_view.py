"""vxtap.store.agent_view on both databases: counter reports and their sums
(the desired state has its own file, test_desired_state.py)."""

from __future__ import annotations

from typing import Any

from support.store_world import make_world, rule_fields
from vxtap.store import agent_view
from vxtap.store import filters as filter_store
from vxtap.store import ports as port_store
from vxtap.store import rules as rule_store
from vxtap.store import sessions as session_store
from vxtap.store.db import Store
from vxtap.store.filters import FilterSpec
from vxtap.store.ports import PortSpec

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


def test_unplaced_copies_are_kept_and_summed_only_where_there_are_any(store: Store) -> None:
    """A group session's copies dropped for want of a healthy member reach session stats
    like the uncut ones: summed over hosts, shown only when not 0."""
    world = make_world(store)
    with store.write() as db:
        second = port_store.create_port(db, "p", "h2", PortSpec("eth0", ipv4=("10.0.0.2",))).id
        session_store.add_sources(db, "p", world["session"], [second])
    for host, unplaced in (("h", 5), ("h2", COUNTER_MAX)):
        value = {"packets": 7, "bytes": 700, "unplaced_packets": unplaced, "unplaced_bytes": 1}
        store.transaction(
            lambda db, host=host, value=value: agent_view.put_counters(
                db, "p", host, {world["session"]: value}, {}
            )
        )
    assert stats(store)["sessions"][world["session"]] == {
        "packets": 14,
        "bytes": 1400,
        "unplaced_packets": COUNTER_MAX + 5,
        "unplaced_bytes": 2,
    }
    report(store, "h", {world["session"]: 1}, {})
    report(store, "h2", {world["session"]: 1}, {})
    assert stats(store)["sessions"][world["session"]] == {"packets": 2, "bytes": 2}
