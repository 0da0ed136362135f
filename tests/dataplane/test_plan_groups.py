"""The plan of a session whose target is a group (pure): one group entry per (session,
source), a member entry per member with an address, tables of member numbers named by
their content, and the constants the mirror program shares."""

from __future__ import annotations

from support.dataplane_lan import SOURCE_PORT, rule, session
from vxtap.dataplane import diff, placement
from vxtap.dataplane import plan as plan_module
from vxtap.dataplane.bpf import asm
from vxtap.dataplane.plan import GroupTunnel, PlanCompiler, chunk_key, compile_plan
from vxtap.model import (
    DesiredState,
    Filter,
    GroupMember,
    Port,
    TargetGroup,
)

COLLECTORS = tuple(
    Port(id=f"c{i}", host="collectors", device="eth0", ipv4=(f"10.9.0.{i + 1}",)) for i in range(3)
)


def state(members: tuple[GroupMember, ...], group_id: str = "tg") -> DesiredState:
    return DesiredState(
        host="source",
        revision="r",
        ports=(SOURCE_PORT,),
        sessions=(session("s", "f", 1, vni=9, group=group_id),),
        filters=(Filter(id="f", name="f", rules=(rule("r", 1),)),),
        targets=COLLECTORS,
        groups=(TargetGroup(id="tg", members=members),),
    )


MEMBERS = (
    GroupMember(port_id="c0", number=0),
    GroupMember(port_id="c1", number=5),
    GroupMember(port_id="c2", number=9, healthy=False),
)


def test_session_marks_stay_below_the_group_keys() -> None:
    # The key layout itself is defined once (bpf.asm, placement), so nothing else to compare.
    assert plan_module.MAX_KEY < asm.MEMBER_KEY_FLAG


def test_a_group_session_has_a_group_entry_member_entries_and_a_table_of_numbers() -> None:
    plan = compile_plan(state(MEMBERS))
    (group,) = plan.groups
    assert isinstance(group, GroupTunnel) and group.group_id == "tg"
    members = {t.member_port_id: t for t in plan.tunnels}
    assert set(members) == {"c0", "c1", "c2"}  # the unhealthy one too: its counters stay
    assert {t.key - group.member_base for t in members.values()} == {0, 5, 9}
    assert {t.remote for t in members.values()} == {"10.9.0.1", "10.9.0.2", "10.9.0.3"}
    assert all(t.vni == 9 and t.local == SOURCE_PORT.ipv4[0] for t in members.values())
    ((table_id, table),) = plan.tables
    assert group.table_id == table_id and len(table) == placement.TABLE_SLOTS
    reference = placement.build_table(["c0", "c1"])  # the healthy ones
    numbers = {"c0": 0, "c1": 5}
    assert table == bytes(numbers[reference.members[index]] for index in reference.slots)
    assert compile_plan(state(MEMBERS)) == plan  # same state, same plan


def test_a_changed_health_gives_a_new_table_id_and_none_healthy_gives_no_table() -> None:
    before = compile_plan(state(MEMBERS))
    one = (MEMBERS[0], MEMBERS[1].model_copy(update={"healthy": False}), MEMBERS[2])
    after = compile_plan(state(one))
    assert after.groups[0].table_id != before.groups[0].table_id
    assert after.digest != before.digest
    assert set(after.tables[0][1]) == {0}
    unhealthy = tuple(m.model_copy(update={"healthy": False}) for m in MEMBERS)
    none = compile_plan(state(unhealthy))
    assert none.groups[0].table_id is None and none.tables == ()
    assert len(none.tunnels) == 3  # member entries stay, for their counters


def test_an_unknown_group_is_skipped_with_its_reason() -> None:
    plan = compile_plan(state(MEMBERS, group_id="tg-gone"))
    assert plan.groups == () and plan.tunnels == ()
    assert plan.skipped == ("session s: target group tg-gone is unknown",)


def test_a_warm_compiler_gives_the_plan_a_fresh_one_gives() -> None:
    compiler = PlanCompiler()
    compiler.compile(state(MEMBERS))
    one = (MEMBERS[0], MEMBERS[1].model_copy(update={"healthy": False}), MEMBERS[2])
    assert compiler.compile(state(one)) == compile_plan(state(one))
    assert compiler.compile(state(MEMBERS)) == compile_plan(state(MEMBERS))


def test_every_slot_of_a_placement_table_chunk_is_compared() -> None:
    """A chunk holds CHUNK_SLOTS member numbers, more than the settings part of an entry:
    a chunk whose last slots differ from the plan's is drift and is written again."""
    plan = compile_plan(state(MEMBERS))
    ((table_id, _),) = plan.tables
    expected = diff.expected_tunnel_map(plan, 2, {}, None)
    key = chunk_key(table_id, 3)
    for slot in range(asm.CHUNK_SLOTS):
        damaged = bytearray(expected[key])
        damaged[slot] ^= 0x0F  # another member's number in this one slot
        current = {**expected, key: bytes(damaged)}
        assert diff.differing_entries(current, expected) == [key], slot
