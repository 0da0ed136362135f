"""Target groups in the store, on both databases: members and their numbers, refusals
with the state unchanged, and which hosts a membership change concerns."""

from __future__ import annotations

import pytest

from vxtap import model
from vxtap.store import common
from vxtap.store import filters as filter_store
from vxtap.store import ports as port_store
from vxtap.store import sessions as session_store
from vxtap.store import target_groups as group_store
from vxtap.store.db import Store
from vxtap.store.errors import InUse, Invalid, NotFound, QuotaExceeded
from vxtap.store.filters import FilterSpec
from vxtap.store.ports import PortSpec
from vxtap.store.sessions import SessionSpec
from vxtap.store.target_groups import TargetGroupChange, TargetGroupSpec


def make_ports(store: Store, count: int, project: str = "p", host: str = "h") -> list[str]:
    with store.write() as db:
        return [
            port_store.create_port(db, project, host, PortSpec(f"c{i}")).id for i in range(count)
        ]


def members(store: Store, group_id: str, project: str = "p") -> list[tuple[int, str]]:
    with store.read() as db:
        row = group_store.get_target_group(db, project, group_id)
        return [(m.number, m.port_id) for m in row.members]


def test_members_get_the_lowest_free_number_and_keep_it(store: Store) -> None:
    a, b, c, d = make_ports(store, 4)
    with store.write() as db:
        group = group_store.create_target_group(db, "p", TargetGroupSpec("g", "d", (a, b, c)))
        group_id = group.id
    assert group_id.startswith("tg-")
    assert members(store, group_id) == [(0, a), (1, b), (2, c)]
    with store.write() as db:
        group_store.remove_members(db, "p", group_id, [b])
    assert members(store, group_id) == [(0, a), (2, c)]
    with store.write() as db:
        group_store.add_members(db, "p", group_id, [d, b])
    assert members(store, group_id) == [(0, a), (1, d), (2, c), (3, b)]
    with store.write() as db:
        group_store.update_target_group(db, "p", group_id, TargetGroupChange(name="renamed"))
    with store.read() as db:
        row = group_store.get_target_group(db, "p", group_id)
        assert (row.name, row.description) == ("renamed", "d")
        page = group_store.list_target_groups(db, "p", {}, None, None)
        assert [r.id for r in page.rows] == [group_id]
        assert group_store.list_target_groups(db, "q", {}, None, None).rows == []


@pytest.mark.parametrize(
    ("change", "refusal"),
    [
        ("add-twice", Invalid),
        ("add-member-again", Invalid),
        ("add-unknown", NotFound),
        ("add-other-project", NotFound),
        ("remove-non-member", Invalid),
        ("delete-member-port", InUse),
        ("group-of-other-project", NotFound),
    ],
)
def test_refusals_leave_the_group_unchanged(
    store: Store, change: str, refusal: type[Exception]
) -> None:
    a, b = make_ports(store, 2)
    (foreign,) = make_ports(store, 1, project="q")
    with store.write() as db:
        group_id = group_store.create_target_group(db, "p", TargetGroupSpec("g", ports=(a,))).id
    actions = {
        "add-twice": lambda db: group_store.add_members(db, "p", group_id, [b, b]),
        "add-member-again": lambda db: group_store.add_members(db, "p", group_id, [b, a]),
        "add-unknown": lambda db: group_store.add_members(db, "p", group_id, [b, "nope"]),
        "add-other-project": lambda db: group_store.add_members(db, "p", group_id, [foreign]),
        "remove-non-member": lambda db: group_store.remove_members(db, "p", group_id, [a, b]),
        "delete-member-port": lambda db: port_store.delete_port(db, "p", a),
        "group-of-other-project": lambda db: group_store.add_members(db, "q", group_id, [foreign]),
    }
    with pytest.raises(refusal), store.write() as db:
        actions[change](db)
    assert members(store, group_id) == [(0, a)]


def test_at_most_256_members(store: Store) -> None:
    ports = make_ports(store, model.MAX_GROUP_MEMBERS + 1)
    with store.write() as db:
        group_id = group_store.create_target_group(
            db, "p", TargetGroupSpec("g", ports=tuple(ports[:-1]))
        ).id
    with pytest.raises(QuotaExceeded), store.write() as db:
        group_store.add_members(db, "p", group_id, ports[-1:])
    numbers = [number for number, _ in members(store, group_id)]
    assert numbers == list(range(model.MAX_GROUP_MEMBERS))


def test_delete_takes_the_memberships_along(store: Store) -> None:
    (a,) = make_ports(store, 1)
    with store.write() as db:
        group_id = group_store.create_target_group(db, "p", TargetGroupSpec("g", ports=(a,))).id
    with store.write() as db:
        group_store.delete_target_group(db, "p", group_id)
    with store.write() as db:
        port_store.delete_port(db, "p", a)  # no longer a member
    with pytest.raises(NotFound), store.read() as db:
        group_store.get_target_group(db, "p", group_id)


def test_membership_changes_reach_the_hosts_of_sessions_naming_the_group(store: Store) -> None:
    (source,) = make_ports(store, 1, host="src")
    a, b = make_ports(store, 2, host="col")
    make_ports(store, 1, host="idle")  # a host with no session of the group
    with store.write() as db:
        filter_id = filter_store.create_filter(db, "p", FilterSpec("f")).id
        group_id = group_store.create_target_group(db, "p", TargetGroupSpec("g", ports=(a,))).id
        session_store.create_session(
            db, "p", SessionSpec("s", filter_id, (source,), group_id, model.TargetKind.ELB, 1)
        )

    def revisions() -> tuple[int, int]:
        with store.read() as db:
            return common.host_revision(db, "p", "src"), common.host_revision(db, "p", "idle")

    steps = [
        lambda db: group_store.add_members(db, "p", group_id, [b]),
        lambda db: group_store.remove_members(db, "p", group_id, [a]),
        # A member's addresses are in the source host's targets.
        lambda db: port_store.register_host_ports(db, "p", "col", [PortSpec("c1", ("10.1.1.1",))]),
    ]
    for step in steps:
        before = revisions()
        with store.write() as db:
            step(db)
        after = revisions()
        assert after[0] > before[0] and after[1] == before[1]
