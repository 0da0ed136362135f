"""Sessions whose target is a group of collectors, in the kernel: each flow's copies, both
directions (UDP over IPv4 and IPv6, ICMP echo), reach the one member that
vxtap.dataplane.placement predicts; a member out
of health moves only its own flows; no healthy member mirrors nothing and counts it.

The three members are addresses of the target namespace (one tcpdump sees them all)."""

from __future__ import annotations

from collections import defaultdict

from support.dataplane_lan import (
    SOURCE_IP,
    SOURCE_IP6,
    SOURCE_PORT,
    TEST_IP,
    TEST_IP6,
    Lan,
    Mirror,
    rule,
)
from vxtap.dataplane import placement
from vxtap.dataplane.plan import compile_plan
from vxtap.model import (
    DesiredState,
    Direction,
    EtherType,
    Filter,
    GroupMember,
    Port,
    Protocol,
    Session,
    TargetGroup,
    TargetKind,
)

MEMBERS = {  # port id -> (number, IPv4 address, IPv6 address)
    "port-c0": (0, "192.168.0.164", "fd00::164"),
    "port-c3": (3, "192.168.0.165", "fd00::165"),
    "port-c7": (7, "192.168.0.166", "fd00::166"),
}
ADDRESS_OF = {v4: port for port, (_, v4, _) in MEMBERS.items()}
# UDP both ways over IPv4 and IPv6; ICMP only of the pingers below (the source's port
# unreachables to the UDP senders are rate-limited, so their count varies from run to run).
FILTER = Filter(
    id="f",
    name="f",
    rules=(
        *(
            rule(f"r-{d.value}-{e.value}", p, direction=d, ethertype=e, protocol=Protocol.UDP)
            for d in Direction
            for p, e in enumerate(EtherType, start=1)
        ),
        rule("r-in-icmp", 3, protocol=Protocol.ICMP, src="192.168.0.96/27"),
        rule("r-out-icmp", 3, direction=Direction.EGRESS, protocol=Protocol.ICMP,
             dst="192.168.0.96/27"),
    ),
)  # fmt: skip
# ICMP flows are address pairs: the test host pings the source from these addresses
# (echo requests ingress, replies egress).
PINGERS = [f"192.168.0.{i}" for i in range(100, 124)]


def group_state(healthy: set[str], revision: str) -> DesiredState:
    members = tuple(
        GroupMember(port_id=port, number=number, healthy=port in healthy)
        for port, (number, _, _) in MEMBERS.items()
    )
    return DesiredState(
        host="source",
        revision=revision,
        ports=(SOURCE_PORT,),
        sessions=(
            Session(
                id="s-elb",
                name="elb",
                filter_id="f",
                sources=(SOURCE_PORT.id,),
                target_id="tg-1",
                target_kind=TargetKind.ELB,
                vni=77,
                priority=1,
            ),
        ),
        filters=(FILTER,),
        targets=tuple(
            Port(id=port, host="collectors", device="eth0", ipv4=(v4,), ipv6=(v6,))
            for port, (_, v4, v6) in MEMBERS.items()
        ),
        groups=(TargetGroup(id="tg-1", members=members),),
    )


# 120 UDP flows over IPv4 and 40 over IPv6, each one datagram from the test host to the
# source (ingress) and one back with the ports swapped (egress).
FLOWS4 = [(4, 20000 + i, 5000 + i % 7) for i in range(180)]
FLOWS6 = [(6, 30000 + i, 6000 + i % 5) for i in range(60)]


def send_both_ways(lan: Lan) -> None:
    to_source = [
        (family, SOURCE_IP if family == 4 else SOURCE_IP6, sport, dport, 32, 1)
        for family, sport, dport in (*FLOWS4, *FLOWS6)
    ]
    back = [
        (family, TEST_IP if family == 4 else TEST_IP6, dport, sport, 32, 1)
        for family, sport, dport in (*FLOWS4, *FLOWS6)
    ]
    lan.send_udp(lan.test, to_source)
    lan.send_udp(lan.source, back)
    for address in PINGERS:
        lan.test.run(["ping", "-q", "-c", "1", "-W", "1", "-I", address, SOURCE_IP])


def flow_of(m: Mirror) -> tuple[object, ...]:
    ends = sorted([(m.src, m.sport), (m.dst, m.dport)], key=str)
    return (m.protocol, *ends)


def ours(m: Mirror) -> bool:
    """A copy of the test's traffic (the UDP flows or the pings)."""
    return (m.protocol == 17 and (m.sport or 0) >= 5000) or m.protocol == 1


def members_by_flow(mirrors: list[Mirror]) -> dict[tuple[object, ...], set[str]]:
    found: dict[tuple[object, ...], set[str]] = defaultdict(set)
    for m in mirrors:
        if ours(m):
            found[flow_of(m)].add(ADDRESS_OF[m.outer_dst])
    return found


def predicted(m: Mirror, healthy: set[str]) -> str:
    table = placement.build_table(healthy)
    return placement.placement(table, placement.flow_hash(placement.flow_key(m.inner)))


def test_each_flow_both_ways_goes_to_the_predicted_member_and_only_its_flows_move(
    lan: Lan,
) -> None:
    everyone = set(MEMBERS)
    for member in MEMBERS.values():
        if member[1] != "192.168.0.164":
            lan.target.run(["ip", "addr", "add", f"{member[1]}/24", "dev", "eth0"])
            lan.target.run(["ip", "addr", "add", f"{member[2]}/64", "dev", "eth0", "nodad"])
    for address in PINGERS:
        lan.test.run(["ip", "addr", "add", f"{address}/24", "dev", "eth0"])
    lan.dataplane.apply(compile_plan(group_state(everyone, "1")))
    with lan.capture() as before:
        send_both_ways(lan)
    placed = members_by_flow(before)
    assert len(placed) == len(FLOWS4) + len(FLOWS6) + len(PINGERS)
    pings = [m for m in before if m.protocol == 1]
    assert len(pings) == 2 * len(PINGERS)  # each request and its reply
    assert all(len(members) == 1 for members in placed.values()), "a flow on two members"
    for m in before:
        if ours(m):
            assert ADDRESS_OF[m.outer_dst] == predicted(m, everyone)
            assert m.vni == 77
    shares = defaultdict(int)
    for (member,) in placed.values():
        shares[member] += 1
    assert set(shares) == everyone  # each member has some of 160 flows
    counters = lan.dataplane.counters()
    captured = defaultdict(int)
    for m in before:
        captured[ADDRESS_OF[m.outer_dst]] += 1
    assert {port: c.packets for (_, port), c in counters.members.items()} == captured

    # port-c3 out of health: its flows move to the others, every other flow stays.
    lan.dataplane.apply(compile_plan(group_state(everyone - {"port-c3"}, "2")))
    with lan.capture() as after:
        send_both_ways(lan)
    moved = members_by_flow(after)
    assert moved.keys() == placed.keys()
    for flow, (member,) in ((f, tuple(m)) for f, m in moved.items()):
        (was,) = placed[flow]
        if was == "port-c3":
            assert member != "port-c3"
        else:
            assert member == was, f"{flow} moved from {was} to {member}"

    # No healthy member: nothing is mirrored, every copy is counted as unplaced.
    lan.dataplane.apply(compile_plan(group_state(set(), "3")))
    unplaced_before = lan.dataplane.counters().unplaced.get("s-elb")
    with lan.capture() as none:
        send_both_ways(lan)
    assert none == []
    unplaced = lan.dataplane.counters().unplaced["s-elb"]
    base = unplaced_before.packets if unplaced_before else 0
    assert unplaced.packets - base == 2 * (len(FLOWS4) + len(FLOWS6) + len(PINGERS))
