"""vxtap.store.sessions on both databases: typed inputs, what an update changes, and the
refusals that leave the session as it was."""

from __future__ import annotations

import pytest

from support.store_world import make_world
from vxtap.model import TargetKind
from vxtap.store import common
from vxtap.store import ports as port_store
from vxtap.store import sessions as session_store
from vxtap.store.db import Store
from vxtap.store.errors import DuplicatePriority, Invalid, NotFound
from vxtap.store.ports import PortSpec
from vxtap.store.sessions import SessionChange, SessionSpec


def test_a_spec_is_stored_under_the_columns_it_names(store: Store) -> None:
    world = make_world(store)
    with store.read() as db:
        row, sources = session_store.show_session(db.connection(), "p", world["session"])
    assert (row.name, row.filter_id, row.target_id, row.target_type) == (
        "s", world["filter"], world["target"], "eni"
    )  # fmt: skip
    assert (row.virtual_network_id, row.packet_length, row.priority, row.enabled) == (
        1,
        96,
        1,
        True,
    )
    assert sources == [world["source"]]


def test_an_update_sets_only_what_it_names_and_wakes_the_hosts_only_for_shown_fields(
    store: Store,
) -> None:
    world = make_world(store)
    with store.read() as db:
        before = common.host_revision(db, "p", "h")
    with store.write() as db:
        session_store.update_session(db, "p", world["session"], SessionChange(description="d"))
    with store.read() as db:
        assert common.host_revision(db, "p", "h") == before  # not in the desired state
    with store.write() as db:
        row = session_store.update_session(
            db, "p", world["session"], SessionChange(vni=77, enabled=False)
        )
        assert (row.virtual_network_id, row.enabled, row.description, row.name) == (
            77, False, "d", "s"
        )  # fmt: skip
    with store.read() as db:
        assert common.host_revision(db, "p", "h") > before


def test_refused_changes_leave_the_session_as_it_was(store: Store) -> None:
    world = make_world(store)
    with store.write() as db:
        other = port_store.create_port(db, "p", "h", PortSpec("eth1", ipv4=("10.0.0.2",))).id
        spec = SessionSpec("t", world["filter"], (other,), world["target"], TargetKind.ENI, 1)
        second = session_store.create_session(db, "p", spec).id
    refusals = [
        (SessionChange(target_id=world["source"]), Invalid, "also a source"),
        (SessionChange(filter_id="nope"), NotFound, "traffic_mirror_filter_id"),
    ]
    for change, error, message in refusals:
        with pytest.raises(error, match=message), store.write() as db:
            session_store.update_session(db, "p", world["session"], change)
    with pytest.raises(DuplicatePriority, match="priority 1 is already used"), store.write() as db:
        session_store.add_sources(db, "p", second, [world["source"]])
    with store.read() as db:
        row, sources = session_store.show_session(db.connection(), "p", world["session"])
        assert (row.target_id, row.filter_id, sources) == (
            world["target"], world["filter"], [world["source"]]
        )  # fmt: skip
        assert session_store.show_session(db.connection(), "p", second)[1] == [other]
