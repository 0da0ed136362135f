"""Sessions whose target is a group of collectors, in the kernel: each flow's copies, both
directions (UDP over IPv4 and IPv6, ICMP echo; real TCP connections over IPv4 and IPv6,
ICMPv6 echo), reach the one member that vxtap.dataplane.placement predicts; a member out
of health moves only its own flows; no healthy member mirrors nothing, counts it and
leaves production alone; member counters are exact, also summed over two sources.

The three members are addresses of the target namespace (one tcpdump sees them all)."""

from __future__ import annotations

import sys
from collections import defaultdict

from support.dataplane_lan import (
    ECHO_PORT,
    SOURCE_IP,
    SOURCE_IP6,
    SOURCE_PORT,
    TARGET_IP,
    TEST_IP,
    TEST_IP6,
    Lan,
    Mirror,
    echo_server,
    rule,
    session,
)
from vxtap.dataplane import placement
from vxtap.dataplane.kernel import PacketsBytes
from vxtap.dataplane.plan import compile_plan
from vxtap.model import (
    DesiredState,
    Direction,
    EtherType,
    Filter,
    GroupMember,
    Port,
    Protocol,
    TargetGroup,
)
from vxtap.netns import veth

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


def group_state(
    healthy: set[str],
    revision: str,
    filter_: Filter = FILTER,
    sources: tuple[Port, ...] = (SOURCE_PORT,),
) -> DesiredState:
    members = tuple(
        GroupMember(port_id=port, number=number, healthy=port in healthy)
        for port, (number, _, _) in MEMBERS.items()
    )
    return DesiredState(
        host="source",
        revision=revision,
        ports=sources,
        sessions=(
            session("s-elb", "f", 1, vni=77, sources=tuple(p.id for p in sources), group="tg-1"),
        ),
        filters=(filter_,),
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


def add_member_addresses(lan: Lan) -> None:
    """The members' addresses on the target (the first one is the target's own)."""
    for member in MEMBERS.values():
        if member[1] != TARGET_IP:
            lan.target.run(["ip", "addr", "add", f"{member[1]}/24", "dev", "eth0"])
            lan.target.run(["ip", "addr", "add", f"{member[2]}/64", "dev", "eth0", "nodad"])


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
    add_member_addresses(lan)
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


# --- TCP over IPv4 and IPv6 and ICMPv6 echo; production with no healthy member ----------

# The test host pings the source from these IPv6 addresses (fd00::200-fd00::217).
PINGERS6 = [f"fd00::{0x200 + i:x}" for i in range(24)]
TCP_CONNECTIONS = 80  # per family

# Fails (exit status 1) unless every connection gets its own bytes back.
_ECHO_CLIENT = """
import socket, sys
for address in sys.argv[2:]:
    for i in range(int(sys.argv[1])):
        c = socket.create_connection((address, {PORT}), timeout=5)
        c.sendall(b"flow %d" % i)
        assert c.recv(100) == b"flow %d" % i
        c.close()
""".replace("{PORT}", str(ECHO_PORT))

TCP_ICMPV6 = Filter(
    id="f",
    name="f",
    rules=(
        *(
            r
            for p, e in enumerate(EtherType, start=1)
            for r in (
                rule(f"r-in-tcp-{e.value}", p, ethertype=e, protocol=Protocol.TCP,
                     dports=f"{ECHO_PORT}-{ECHO_PORT}"),
                rule(f"r-out-tcp-{e.value}", p, direction=Direction.EGRESS, ethertype=e,
                     protocol=Protocol.TCP, sports=f"{ECHO_PORT}-{ECHO_PORT}"),
            )
        ),
        rule("r-in-icmp6", 3, ethertype=EtherType.IPV6, protocol=Protocol.ICMPV6,
             src="fd00::200/123"),
        rule("r-out-icmp6", 3, direction=Direction.EGRESS, ethertype=EtherType.IPV6,
             protocol=Protocol.ICMPV6, dst="fd00::200/123"),
    ),
)  # fmt: skip


def tcp_and_pings(lan: Lan) -> None:
    """TCP_CONNECTIONS echo connections per family and one ICMPv6 echo per pinger; raises
    (check=True) when a connection does not get its bytes back or a ping is lost."""
    lan.test.run([sys.executable, "-c", _ECHO_CLIENT, str(TCP_CONNECTIONS), SOURCE_IP, SOURCE_IP6])
    for address in PINGERS6:
        lan.test.run(["ping", "-6", "-q", "-c", "1", "-W", "2", "-I", address, SOURCE_IP6])


def icmpv6_type(m: Mirror) -> int | None:
    return m.inner[14 + 40] if m.protocol == 58 and len(m.inner) > 14 + 40 else None


def test_tcp_and_icmpv6_flows_both_ways_go_to_the_predicted_member_and_none_healthy_leaves_production_alone(  # noqa: E501
    lan: Lan,
) -> None:
    """Real TCP connections over IPv4 and IPv6 and ICMPv6 echo: each flow's copies, both
    directions, reach one member, the one placement.py predicts from the copy; the member
    counters equal what each member received. With no healthy member every connection and
    ping still succeeds, nothing is mirrored, and every copy the session's rules handed to
    the program is counted as unplaced (packets and bytes)."""
    everyone = set(MEMBERS)
    add_member_addresses(lan)
    for address in PINGERS6:
        lan.test.run(["ip", "addr", "add", f"{address}/64", "dev", "eth0", "nodad"])
    lan.dataplane.apply(compile_plan(group_state(everyone, "1", TCP_ICMPV6)))
    with echo_server(lan.source):
        with lan.capture() as mirrors:
            tcp_and_pings(lan)
        counted = lan.dataplane.counters()
        lan.dataplane.apply(compile_plan(group_state(set(), "2", TCP_ICMPV6)))
        with lan.capture() as none:
            tcp_and_pings(lan)  # production: every connection and ping succeeds
        after = lan.dataplane.counters()

    flows: dict[tuple[object, ...], set[str]] = defaultdict(set)
    for m in mirrors:
        assert m.vni == 77
        assert ADDRESS_OF[m.outer_dst] == predicted(m, everyone), m
        flows[flow_of(m)].add(ADDRESS_OF[m.outer_dst])
    tcp = {f for f in flows if f[0] == 6}
    assert len(tcp) == 2 * TCP_CONNECTIONS
    # (Neighbour discovery between the same hosts is mirrored too: flows of their own.)
    echo = [m for m in mirrors if icmpv6_type(m) in (128, 129)]
    assert {flow_of(m) for m in echo} == {
        (58, *sorted([(p, None), (SOURCE_IP6, None)], key=str)) for p in PINGERS6
    }
    assert all(len(members) == 1 for members in flows.values()), "a flow on two members"
    directions = defaultdict(set)  # both directions of every connection and echo
    for m in (*(m for m in mirrors if m.protocol == 6), *echo):
        directions[flow_of(m)].add(m.src)
    assert all(len(d) == 2 for d in directions.values())
    types = sorted(icmpv6_type(m) for m in echo)
    assert types == [128] * len(PINGERS6) + [129] * len(PINGERS6)
    assert {member for (member,) in flows.values()} == everyone
    captured: dict[str, PacketsBytes] = defaultdict(PacketsBytes)
    for m in mirrors:  # a member's bytes: the frames' lengths before the cut
        assert m.ip_length is not None
        captured[ADDRESS_OF[m.outer_dst]] += PacketsBytes(1, 14 + m.ip_length)
    assert {port: c for (_, port), c in counted.members.items()} == captured
    assert len(mirrors) == counted.sessions["s-elb"].packets  # every copy placed
    assert "s-elb" not in counted.unplaced

    assert none == []
    mirrored = after.sessions["s-elb"].packets - counted.sessions["s-elb"].packets
    octets = after.sessions["s-elb"].bytes - counted.sessions["s-elb"].bytes
    assert mirrored >= 2 * TCP_CONNECTIONS * 6  # per connection at least 3 segments each way
    # The program counts the copy's frame; nft's counters at the netdev ingress hook count
    # a packet without its Ethernet header (pulled before the hook), at egress with it.
    ingress = sum(
        after.rules[r.id].packets - counted.rules.get(r.id, PacketsBytes()).packets
        for r in TCP_ICMPV6.rules
        if r.direction is Direction.INGRESS
    )
    assert 0 < ingress < mirrored
    assert after.unplaced["s-elb"] == PacketsBytes(mirrored, octets + 14 * ingress)
    assert after.members == counted.members  # nothing more placed on any member


# --- a session with two sources on the host -----------------------------------------

SECOND_SOURCE = Port(id="port-source-1", host="source", device="eth1", ipv4=("192.168.1.230",))
UDP_IN = Filter(id="f", name="f", rules=(rule("r-in-udp", 1, protocol=Protocol.UDP),))
FLOWS_PER_SOURCE = 60


def test_member_and_unplaced_counters_add_up_over_the_sources_of_a_session(lan: Lan) -> None:
    """Each source of a session has its own group entry and member entries in the map;
    a member's counter (and the session's unplaced one) is their sum."""
    everyone = set(MEMBERS)
    add_member_addresses(lan)
    veth(lan.test, "eth1", lan.source, "eth1")
    lan.test.run(["ip", "addr", "add", "192.168.1.161/24", "dev", "eth1"])
    lan.source.run(["ip", "addr", "add", "192.168.1.230/24", "dev", "eth1"])
    sources = (SOURCE_PORT, SECOND_SOURCE)
    datagrams = [
        (4, address, 40000 + i, 9000 + i % 3, 32, 1)
        for address in (SOURCE_IP, SECOND_SOURCE.ipv4[0])
        for i in range(FLOWS_PER_SOURCE)
    ]
    lan.dataplane.apply(compile_plan(group_state(everyone, "1", UDP_IN, sources)))
    with lan.capture() as mirrors:
        lan.send_udp(lan.test, datagrams)
    ours = [m for m in mirrors if m.protocol == 17 and (m.sport or 0) >= 40000]
    assert len(ours) == len(datagrams) == len(mirrors)
    assert {m.outer_src for m in ours} == {SOURCE_IP, SECOND_SOURCE.ipv4[0]}  # both sources
    captured: dict[str, int] = defaultdict(int)
    for m in ours:
        captured[ADDRESS_OF[m.outer_dst]] += 1
    counted = lan.dataplane.counters()
    assert {port: c.packets for (_, port), c in counted.members.items()} == captured

    lan.dataplane.apply(compile_plan(group_state(set(), "2", UDP_IN, sources)))
    with lan.capture() as none:
        lan.send_udp(lan.test, datagrams)
    assert none == []
    assert lan.dataplane.counters().unplaced["s-elb"].packets == len(datagrams)
