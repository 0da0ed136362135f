"""vxtap.store.ports on both databases: registration keeps a device's id, a port is unique
per host and device, and a port a session names is not deleted."""

from __future__ import annotations

import pytest

from support.store_world import make_world
from vxtap.store import common
from vxtap.store import ports as port_store
from vxtap.store.db import Store
from vxtap.store.errors import AlreadyExists, InUse
from vxtap.store.ports import PortSpec


def test_registering_again_keeps_each_devices_id_and_a_no_op_wakes_no_one(store: Store) -> None:
    eth0 = PortSpec("eth0", ipv4=("10.0.0.1",), mac="fa:16:3e:00:00:01")
    with store.write() as db:
        first = {p.device: p.id for p in port_store.register_host_ports(db, "p", "h", [eth0])}
    with store.read() as db:
        revision = common.host_revision(db, "p", "h")
    with store.write() as db:
        again = port_store.register_host_ports(db, "p", "h", [eth0])
    with store.read() as db:
        assert common.host_revision(db, "p", "h") == revision  # nothing changed: no wake-up
    assert {p.device: p.id for p in again} == first
    with store.write() as db:
        moved = port_store.register_host_ports(db, "p", "h", [PortSpec("eth0", ipv4=("10.0.0.9",))])
    assert [(p.id, p.ipv4, p.mac) for p in moved] == [(first["eth0"], ["10.0.0.9"], None)]
    with store.read() as db:
        assert common.host_revision(db, "p", "h") != revision


def test_a_second_port_for_one_host_and_device_is_refused(store: Store) -> None:
    with store.write() as db:
        port_store.create_port(db, "p", "h", PortSpec("eth0"))
    with pytest.raises(AlreadyExists, match="port h/eth0 exists already"), store.write() as db:
        port_store.create_port(db, "p", "h", PortSpec("eth0", ipv4=("10.0.0.2",)))
    with store.write() as db:
        port_store.create_port(db, "p", "h2", PortSpec("eth0"))  # another host: its own


def test_a_port_a_session_names_is_not_deleted(store: Store) -> None:
    world = make_world(store)
    for port in (world["source"], world["target"]):
        with pytest.raises(InUse, match=world["session"]), store.write() as db:
            port_store.delete_port(db, "p", port)
    with store.read() as db:
        assert port_store.get_port(db, "p", world["target"]).id == world["target"]
