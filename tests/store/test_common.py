"""The per-project change counter: every write that can change a host's desired state
bumps it in its own transaction; counter reports and refused writes do not."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy.orm import Session

from vxtap import model
from vxtap.model import TargetKind
from vxtap.store import agent_view, common
from vxtap.store import filters as filter_store
from vxtap.store import ports as port_store
from vxtap.store import rules as rule_store
from vxtap.store import sessions as session_store
from vxtap.store.db import Store
from vxtap.store.errors import StoreError
from vxtap.store.filters import FilterChange, FilterSpec
from vxtap.store.ports import PortSpec
from vxtap.store.rules import RuleChange, RuleSpec
from vxtap.store.sessions import SessionChange, SessionSpec


def counter(store: Store, project: str = "p") -> int:
    with store.read_rows() as connection:
        return common.change_counter(connection, project)


def rule_spec(filter_id: str, priority: int) -> RuleSpec:
    return RuleSpec(
        filter_id=filter_id,
        direction=model.Direction.INGRESS,
        priority=priority,
        action=model.Action.ACCEPT,
        ethertype=model.EtherType.IPV4,
        protocol=model.Protocol.TCP,
    )


def test_every_desired_state_write_bumps_and_nothing_else(store: Store) -> None:
    assert counter(store) == 0  # no row before a project's first write
    ids: dict[str, str] = {}

    def step(action: Callable[[Session], Any]) -> int:
        before = counter(store)
        with store.write() as db:
            action(db)
        return counter(store) - before

    port = lambda db, name: port_store.create_port(  # noqa: E731
        db, "p", "h", PortSpec(device=name, ipv4=("10.0.0.1",))
    )
    assert step(lambda db: ids.update(src=port(db, "eth0").id)) == 1
    assert step(lambda db: ids.update(dst=port(db, "eth1").id)) == 1
    assert step(lambda db: ids.update(extra=port(db, "eth2").id)) == 1
    assert step(lambda db: port_store.register_host_ports(db, "p", "h2", [])) == 1
    assert (
        step(lambda db: ids.update(f=filter_store.create_filter(db, "p", FilterSpec("f")).id)) == 1
    )
    assert (
        step(lambda db: filter_store.update_filter(db, "p", ids["f"], FilterChange(name="g"))) == 1
    )
    rule = rule_spec(ids["f"], 1)
    assert step(lambda db: ids.update(r=rule_store.create_rule(db, "p", rule).id)) == 1
    assert step(lambda db: rule_store.update_rule(db, "p", ids["r"], RuleChange(priority=2))) == 1
    session = SessionSpec("s", ids["f"], (ids["src"],), ids["dst"], TargetKind.ENI, priority=1)
    assert step(lambda db: ids.update(s=session_store.create_session(db, "p", session).id)) == 1
    assert (
        step(
            lambda db: session_store.update_session(db, "p", ids["s"], SessionChange(enabled=False))
        )
        == 1
    )
    assert step(lambda db: session_store.add_sources(db, "p", ids["s"], [ids["extra"]])) == 1
    assert step(lambda db: session_store.remove_sources(db, "p", ids["s"], [ids["extra"]])) == 1
    # Counter reports change no desired state.
    assert step(lambda db: agent_view.put_counters(db, "p", "h", {}, {})) == 0
    assert step(lambda db: session_store.delete_session(db, "p", ids["s"])) == 1
    assert step(lambda db: rule_store.delete_rule(db, "p", ids["r"])) == 1
    assert step(lambda db: filter_store.delete_filter(db, "p", ids["f"])) == 1
    assert step(lambda db: port_store.delete_port(db, "p", ids["extra"])) == 1
    assert counter(store, "other") == 0  # per project


def test_a_refused_write_leaves_the_counter(store: Store) -> None:
    with store.write() as db:
        filter_store.create_filter(db, "p", FilterSpec("f"))
    before = counter(store)
    with pytest.raises(StoreError), store.write() as db:
        filter_store.delete_filter(db, "p", "no-such-filter")
    assert counter(store) == before


def test_concurrent_writes_count_each_once_without_deadlock(store: Store) -> None:
    """Writers of one project queue on the counter row: every write counted, none fails."""
    with store.write() as db:
        filter_id = filter_store.create_filter(db, "p", FilterSpec("f")).id
    failures: list[BaseException] = []

    def writer(worker: int) -> None:
        try:
            for i in range(10):
                with store.write() as db:
                    rule_store.create_rule(
                        db,
                        "p",
                        rule_spec(filter_id, worker * 100 + i + 1),
                        quota=6 * 10,  # all 60 in one filter and direction
                    )
                with store.write() as db:
                    filter_store.update_filter(
                        db, "p", filter_id, FilterChange(description=f"w{worker} {i}")
                    )
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert counter(store) == 1 + 6 * 10 * 2
