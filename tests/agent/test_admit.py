"""What the agent refuses before compiling: states beyond the limits, unsafe targets."""

from __future__ import annotations

import pytest

from vxtap.agent.admit import limit_problems, summary, unsafe_address, unsafe_targets
from vxtap.model import (
    Action,
    DesiredState,
    Direction,
    EtherType,
    Filter,
    GroupMember,
    Port,
    Protocol,
    Rule,
    Session,
    TargetGroup,
    TargetKind,
)

SOURCE = Port(id="src", host="h", device="eth0", ipv4=("10.0.0.1",))
TARGET = Port(id="tgt", host="t", device="eth0", ipv4=("10.0.0.2",))


def rule(id: str, priority: int, direction: Direction = Direction.INGRESS) -> Rule:
    return Rule(
        id=id,
        filter_id="f",
        direction=direction,
        priority=priority,
        action=Action.ACCEPT,
        ethertype=EtherType.IPV4,
        protocol=Protocol.ALL,
    )


def session(
    id: str, priority: int, sources: tuple[str, ...] = ("src",), target: str = "tgt"
) -> Session:
    return Session(
        id=id, name=id, filter_id="f", sources=sources, target_id=target, priority=priority
    )


def desired(
    sessions: tuple[Session, ...],
    rules: tuple[Rule, ...] = (),
    targets: tuple[Port, ...] = (TARGET,),
) -> DesiredState:
    flt = Filter(id="f", name="f", rules=rules or (rule("r1", 1),))
    return DesiredState(
        host="h", revision="r", ports=(SOURCE,), sessions=sessions, filters=(flt,), targets=targets
    )


def test_a_state_within_the_limits_passes() -> None:
    sessions = tuple(session(f"s{i}", i + 1) for i in range(3))
    rules = (rule("r1", 1), rule("r2", 2), rule("r3", 1, Direction.EGRESS))
    assert limit_problems(desired(sessions, rules)) == []
    ten_sources = session("s", 1, sources=tuple(f"p{i}" for i in range(10)))
    assert limit_problems(desired((ten_sources,))) == []
    assert limit_problems(desired((session("s", 1, sources=()),))) == []  # transiently empty


def test_sessions_per_source_sources_per_session_and_priorities() -> None:
    many = tuple(session(f"s{i:06d}", 1 + i % 32766) for i in range(100_000))
    problems = limit_problems(desired(many))
    assert "port src is a source of 100,000 sessions (at most 3)" in problems
    assert "4 sessions of source src have priority 1 (unique per source)" in problems
    line = summary(problems)
    assert line.startswith("port src is a source of 100,000 sessions (at most 3); ")
    assert line.endswith(f"; and {len(problems) - 5:,} more") and len(line) < 600

    eleven = session("s", 1, sources=tuple(f"p{i}" for i in range(11)))
    assert limit_problems(desired((eleven,))) == ["session s has 11 sources (at most 10)"]
    same = (session("a", 5), session("b", 5))
    assert limit_problems(desired(same)) == [
        "2 sessions of source src have priority 5 (unique per source)"
    ]


def test_rule_priorities_and_repeated_ids() -> None:
    rules = (rule("r1", 1), rule("r2", 1), rule("r3", 1, Direction.EGRESS))
    assert limit_problems(desired((session("s", 1),), rules)) == [
        "2 ingress rules of filter f have priority 1 (unique per filter and direction)"
    ]
    twice = (session("s", 1), session("s", 2))
    assert limit_problems(desired(twice)) == ["session id s appears 2 times"]


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("255.255.255.255", "broadcast"),
        ("10.0.0.255", "broadcast"),  # a subnet broadcast of this host
        ("224.0.0.5", "multicast"),
        ("239.1.2.3", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("169.254.169.254", "link-local"),
        ("ff02::1", "multicast"),
        ("ff05::2", "multicast"),
        ("::", "unspecified"),
        ("::1", "loopback"),
        ("fe80::1", "link-local"),
        ("::ffff:255.255.255.255", "broadcast"),
        ("::ffff:127.0.0.1", "loopback"),
        ("not-an-address", "not an IP address"),
        ("10.0.0.2", None),
        ("10.0.1.255", None),  # another subnet's broadcast cannot be told from unicast here
        ("192.168.0.0", None),
        ("2001:db8::1", None),
        ("fd00::164", None),
    ],
)
def test_unsafe_addresses(address: str, reason: str | None) -> None:
    assert unsafe_address(address, frozenset({"10.0.0.255", "127.255.255.255"})) == reason


def test_unsafe_targets_names_each_session_and_its_reason() -> None:
    flood = Port(id="flood", host="x", device="eth0", ipv4=("255.255.255.255",))
    mcast6 = Port(id="m6", host="x", device="eth0", ipv6=("ff02::1",))
    sessions = (
        session("a", 1, target="flood"),
        session("b", 2, target="m6"),
        session("c", 3),
        session("d", 4, sources=("other",), target="unknown"),
    )
    state = desired(sessions, targets=(TARGET, flood, mcast6))
    assert unsafe_targets(state) == {
        "a": "target flood address 255.255.255.255 is broadcast",
        "b": "target m6 address ff02::1 is multicast",
    }


def group_state(members: tuple[GroupMember, ...], *ports: Port) -> DesiredState:
    elb = Session(
        id="e",
        name="e",
        filter_id="f",
        sources=("src",),
        target_id="tg",
        target_kind=TargetKind.ELB,
        priority=1,
    )
    return desired((elb,), targets=(TARGET, *ports)).model_copy(
        update={"groups": (TargetGroup(id="tg", members=members),)}
    )


def test_a_group_session_with_a_member_that_is_not_unicast_is_left_out() -> None:
    flood = Port(id="flood", host="x", device="eth0", ipv4=("10.0.0.255",))
    members = (GroupMember(port_id="tgt", number=0), GroupMember(port_id="flood", number=1))
    state = group_state(members, flood)
    assert unsafe_targets(state, {"10.0.0.255"}) == {
        "e": "member flood of target group tg: address 10.0.0.255 is broadcast"
    }
    assert unsafe_targets(state) == {}  # another subnet's broadcast: not known here
    # Also a member out of health: it may come back at any moment.
    sick = (members[0], members[1].model_copy(update={"healthy": False}))
    assert unsafe_targets(group_state(sick, flood), {"10.0.0.255"}).keys() == {"e"}


def test_repeated_groups_member_numbers_and_member_ports() -> None:
    two = (GroupMember(port_id="tgt", number=0), GroupMember(port_id="p", number=0))
    assert limit_problems(group_state(two)) == ["target group tg: member number 0 appears 2 times"]
    same = (GroupMember(port_id="tgt", number=0), GroupMember(port_id="tgt", number=1))
    assert limit_problems(group_state(same)) == ["target group tg: port tgt appears 2 times"]
    state = group_state(two[:1])
    twice = state.model_copy(update={"groups": state.groups * 2})
    assert limit_problems(twice) == ["target group id tg appears 2 times"]
    assert limit_problems(state) == []
