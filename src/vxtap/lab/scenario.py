"""Lab scenarios as plain data: who is on the VPC, what is mirrored, what must arrive.

A scenario is a pure description; nothing here touches the kernel. The mirror
configuration reuses the domain types of `vxtap.model` (a scenario's filters,
rules and sessions are exactly what the lab creates through the API, with
names standing in for the ids the server will assign, and ports named
`HOST/DEVICE`). Servers, security groups, traffic and expectations are the
lab's own vocabulary.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from vxtap.model import (
    Action,
    Direction,
    EtherType,
    Filter,
    IPNetwork,
    PortRange,
    Protocol,
    Rule,
    Session,
    TargetKind,
)

VPC_SUBNET = ipaddress.IPv4Network("192.168.0.0/24")
SERVER_DEVICE = "eth0"


@dataclass(frozen=True)
class GroupRule:
    """One inbound security-group rule. `remote` is a CIDR, or a group name for
    "the servers in that group" (the seed's "current security group (Sg-X)")."""

    ethertype: EtherType
    protocol: Protocol
    remote: str
    ports: PortRange | None = None
    description: str = ""

    def remote_is_group(self) -> bool:
        return "/" not in self.remote


@dataclass(frozen=True)
class SecurityGroup:
    """Inbound rules; everything not allowed is dropped, replies to allowed or
    outgoing traffic pass (security groups are stateful). Outbound is open, as
    in the seed's default group."""

    name: str
    rules: tuple[GroupRule, ...]


@dataclass(frozen=True)
class Server:
    name: str
    ipv4: str
    mac: str
    groups: tuple[str, ...]

    @property
    def port(self) -> str:
        """How sessions name this server's VPC interface: HOST/DEVICE."""
        return f"{self.name}/{SERVER_DEVICE}"


def shorten(text: str, limit: int = 24) -> str:
    """A typed line as shown in the lab's output: long ones abbreviated."""
    return text if len(text) <= limit else f"{text[:8]}... ({len(text)} characters)"


@dataclass(frozen=True)
class Conversation:
    """`nc -l PORT` on `server`, `nc ADDR PORT` on `client`, the client types
    `lines` one after the other; the listener answers each line with the reply
    of the same index, if any."""

    client: str
    server: str
    port: int
    protocol: Protocol = Protocol.TCP
    lines: tuple[str, ...] = ("hello", "12345")
    replies: tuple[str, ...] = ()


@dataclass(frozen=True)
class Load:
    """`iperf3 -s -p PORT` on `server`, `iperf3 -c ... --bidir -P STREAMS` on `client`:
    `streams` flows each way (2 x streams flows, plus iperf3's control connection), each
    paced to `bitrate` in writes of `length` bytes. The packets are the kernel's."""

    client: str
    server: str
    port: int
    protocol: Protocol
    streams: int
    bitrate: str = "16K"
    length: int = 200


@dataclass(frozen=True)
class CollectorGroup:
    """A target group of the scenario: its name and its member ports (HOST/DEVICE)."""

    name: str
    members: tuple[str, ...]


@dataclass(frozen=True)
class Pattern:
    """Which mirrored packets an expectation is about; None matches anything."""

    vni: int | None = None
    protocol: Protocol | None = None
    src: str | None = None
    dst: str | None = None
    sport: int | None = None
    dport: int | None = None
    payload_length: int | None = None
    frame_length: int | None = None  # the inner frame as it arrived (after truncation)

    def describe(self) -> str:
        proto = self.protocol.value if self.protocol else "IP"
        src = f"{self.src or '*'}{f'.{self.sport}' if self.sport else ''}"
        dst = f"{self.dst or '*'}{f'.{self.dport}' if self.dport else ''}"
        parts = [f"{proto} {src} > {dst}"]
        if self.payload_length is not None:
            parts.append(f"payload length {self.payload_length}")
        if self.frame_length is not None:
            parts.append(f"cut to a {self.frame_length}-byte frame")
        if self.vni is not None:
            parts.append(f"vni {self.vni}")
        return ", ".join(parts)


@dataclass(frozen=True)
class Expectation:
    """At `target`, packets matching `pattern` arrive exactly `count` times
    (0 = must not arrive), or any number of times when `count` is None.
    Whatever arrives at a target and matches no expectation with a count other
    than 0 is unexpected, and fails the verification too."""

    target: str
    pattern: Pattern
    count: int | None
    why: str

    def describe(self) -> str:
        if self.count is None:
            how = "may arrive"
        elif self.count == 0:
            how = "must not arrive"
        else:
            how = f"must arrive {self.count} time{'s' if self.count != 1 else ''}"
        return f"at {self.target}: {self.pattern.describe()} {how} ({self.why})"


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str
    servers: tuple[Server, ...]
    security_groups: tuple[SecurityGroup, ...]
    filters: tuple[Filter, ...]
    sessions: tuple[Session, ...]
    traffic: tuple[Conversation, ...]
    expectations: tuple[Expectation, ...]
    notes: tuple[str, ...] = field(default=())
    groups: tuple[CollectorGroup, ...] = ()
    loads: tuple[Load, ...] = ()
    # The server whose collector `verify` stops mid-run and starts again (the break
    # `collector-down`), None for none.
    outage: str | None = None

    def __post_init__(self) -> None:
        problems = list(_problems(self))
        if problems:
            raise ValueError(f"scenario {self.name!r}: " + "; ".join(problems))

    def server(self, name: str) -> Server:
        for server in self.servers:
            if server.name == name:
                return server
        raise KeyError(f"scenario {self.name!r} has no server {name!r}")

    def group(self, name: str) -> SecurityGroup:
        for group in self.security_groups:
            if group.name == name:
                return group
        raise KeyError(f"scenario {self.name!r} has no security group {name!r}")

    def server_by_port(self, port: str) -> Server:
        host, _, _device = port.partition("/")
        return self.server(host)

    def target_group(self, name: str) -> CollectorGroup:
        for group in self.groups:
            if group.name == name:
                return group
        raise KeyError(f"scenario {self.name!r} has no target group {name!r}")

    def target_ports(self, session: Session) -> tuple[str, ...]:
        """The ports a session mirrors to: its target, or its group's members."""
        if session.target_kind is TargetKind.ELB:
            return self.target_group(session.target_id).members
        return (session.target_id,)

    @property
    def targets(self) -> tuple[str, ...]:
        """Names of the servers that are the target of at least one session (or a
        member of a group that a session mirrors to)."""
        names = {
            self.server_by_port(port).name for s in self.sessions for port in self.target_ports(s)
        }
        return tuple(s.name for s in self.servers if s.name in names)

    def with_session(self, name: str, **changes: object) -> Scenario:
        """A copy with one session changed (e.g. enabled=False): breaks on purpose."""
        sessions = tuple(
            s.model_copy(update=changes) if s.name == name else s for s in self.sessions
        )
        return replace(self, sessions=sessions)

    def with_rule(self, rule_id: str, **changes: object) -> Scenario:
        filters = tuple(
            f.model_copy(
                update={
                    "rules": tuple(
                        Rule.model_validate({**r.model_dump(), **changes}) if r.id == rule_id else r
                        for r in f.rules
                    )
                }
            )
            for f in self.filters
        )
        return replace(self, filters=filters)

    def without_group_rule(self, group: str, predicate_port: int) -> Scenario:
        """A copy whose group `group` lost the rules that open port `predicate_port`."""
        groups = tuple(
            replace(
                sg,
                rules=tuple(r for r in sg.rules if not (r.ports and predicate_port in r.ports)),
            )
            if sg.name == group
            else sg
            for sg in self.security_groups
        )
        return replace(self, security_groups=groups)


def _problems(s: Scenario) -> Iterable[str]:
    names = [srv.name for srv in s.servers]
    if len(set(names)) != len(names):
        yield "server names repeat"
    group_names = {g.name for g in s.security_groups}
    for srv in s.servers:
        if ipaddress.IPv4Address(srv.ipv4) not in VPC_SUBNET:
            yield f"server {srv.name} address {srv.ipv4} is outside {VPC_SUBNET}"
        for name in srv.groups:
            if name not in group_names:
                yield f"server {srv.name} names unknown security group {name}"
    for group in s.security_groups:
        for r in group.rules:
            if r.remote_is_group() and r.remote not in group_names:
                yield f"group {group.name} rule names unknown group {r.remote}"
    filter_ids = {f.id for f in s.filters}
    target_group_names = {g.name for g in s.groups}
    for target_group in s.groups:
        for port in target_group.members:
            if port.partition("/")[0] not in names:
                yield f"target group {target_group.name} names unknown port {port}"
    for sess in s.sessions:
        if sess.filter_id not in filter_ids:
            yield f"session {sess.name} names unknown filter {sess.filter_id}"
        if sess.target_kind is TargetKind.ELB:
            if sess.target_id not in target_group_names:
                yield f"session {sess.name} names unknown target group {sess.target_id}"
            targets: tuple[str, ...] = ()
        else:
            targets = (sess.target_id,)
        for port in (*sess.sources, *targets):
            if port.partition("/")[0] not in names:
                yield f"session {sess.name} names unknown port {port}"
    for load in s.loads:
        for who in (load.client, load.server):
            if who not in names:
                yield f"load names unknown server {who}"
    if s.outage is not None and s.outage not in s.targets:
        yield f"the outage names {s.outage}, which is no target"
    for c in s.traffic:
        for who in (c.client, c.server):
            if who not in names:
                yield f"traffic names unknown server {who}"
    for e in s.expectations:
        if e.target not in names:
            yield f"expectation names unknown server {e.target}"


# --- building blocks shared by the scenarios --------------------------------------------


def default_group(name: str) -> SecurityGroup:
    """The seed's default security group, with `extra` inbound rules appended later."""
    return SecurityGroup(
        name,
        (
            GroupRule(EtherType.IPV4, Protocol.TCP, "0.0.0.0/0", PortRange.parse("22-22"), "SSH"),
            GroupRule(
                EtherType.IPV4, Protocol.TCP, "0.0.0.0/0", PortRange.parse("3389-3389"), "RDP"
            ),
            GroupRule(EtherType.IPV4, Protocol.ALL, name, None, "intra-group IPv4"),
            GroupRule(EtherType.IPV6, Protocol.ALL, name, None, "intra-group IPv6"),
        ),
    )


def group_with(name: str, *extra: GroupRule) -> SecurityGroup:
    base = default_group(name)
    return replace(base, rules=(*base.rules, *extra))


def allow(protocol: Protocol, port: int, source: str, why: str) -> GroupRule:
    return GroupRule(EtherType.IPV4, protocol, f"{source}/32", PortRange(start=port, end=port), why)


def rule(
    rule_id: str,
    filter_id: str,
    direction: Direction,
    priority: int,
    action: Action,
    protocol: Protocol,
    *,
    src: str | None = None,
    dst: str | None = None,
    sports: str | None = None,
    dports: str | None = None,
) -> Rule:
    def net(cidr: str | None) -> IPNetwork | None:
        return ipaddress.ip_network(cidr) if cidr else None

    return Rule(
        id=rule_id,
        filter_id=filter_id,
        direction=direction,
        priority=priority,
        action=action,
        ethertype=EtherType.IPV4,
        protocol=protocol,
        source_cidr=net(src),
        destination_cidr=net(dst),
        source_ports=PortRange.parse(sports) if sports else None,
        destination_ports=PortRange.parse(dports) if dports else None,
    )


TEST = Server("ECS-test", "192.168.0.161", "fa:16:3e:7e:d6:77", ("Sg-test",))
SOURCE = Server("ECS-source", "192.168.0.230", "fa:16:3e:7e:d6:bc", ("Sg-source",))
TARGET = Server("ECS-target", "192.168.0.164", "fa:16:3e:7e:d6:7a", ("Sg-target",))
TARGET2 = Server("ECS-target2", "192.168.0.165", "fa:16:3e:7e:d6:7b", ("Sg-target2",))
TEST2 = Server("ECS-test2", "192.168.0.162", "fa:16:3e:7e:d6:78", ("Sg-test2",))
TARGET3 = Server("ECS-target3", "192.168.0.166", "fa:16:3e:7e:d6:7c", ("Sg-target3",))

LONG_LINE = "x" * 299
TCP_1234_FROM_TEST = allow(Protocol.TCP, 1234, TEST.ipv4, "TCP 1234 from ECS-test")
VXLAN_FROM_SOURCE = allow(Protocol.UDP, 4789, SOURCE.ipv4, "VXLAN from ECS-source")


def _seed() -> Scenario:
    rule_in = rule(
        "seed-in-1",
        "seed-filter",
        Direction.INGRESS,
        1,
        Action.ACCEPT,
        Protocol.TCP,
        src="192.168.0.161/32",
        dst="192.168.0.230/32",
        dports="1234-1234",
    )
    session = Session(
        id="seed-session",
        name="seed-session",
        filter_id="seed-filter",
        sources=(SOURCE.port,),
        target_id=TARGET.port,
        vni=1,
        priority=1,
    )
    inbound = Pattern(vni=1, protocol=Protocol.TCP, src=TEST.ipv4, dst=SOURCE.ipv4, dport=1234)
    return Scenario(
        name="seed",
        summary="The user's document: inbound TCP 1234 of ECS-source mirrored to ECS-target, "
        "VNI 1.",
        servers=(TEST, SOURCE, TARGET),
        security_groups=(
            default_group("Sg-test"),
            group_with("Sg-source", TCP_1234_FROM_TEST),
            group_with("Sg-target", VXLAN_FROM_SOURCE),
        ),
        filters=(Filter(id="seed-filter", name="seed-filter", rules=(rule_in,)),),
        sessions=(session,),
        traffic=(Conversation(client=TEST.name, server=SOURCE.name, port=1234),),
        expectations=(
            Expectation(
                TARGET.name,
                replace(inbound, payload_length=6),
                2,
                "'hello' and '12345' from ECS-test, each mirrored once",
            ),
            Expectation(
                TARGET.name,
                inbound,
                None,
                "the handshake and ACKs of that connection match the rule too",
            ),
            Expectation(
                TARGET.name,
                Pattern(src=SOURCE.ipv4),
                0,
                "ECS-source's replies are outbound; the filter has only an inbound rule",
            ),
        ),
    )


def _two_targets() -> Scenario:
    tcp_in = rule(
        "tt-tcp-in", "tt-tcp", Direction.INGRESS, 1, Action.ACCEPT, Protocol.TCP, dports="1234-1234"
    )
    udp_in = rule(
        "tt-udp-in", "tt-udp", Direction.INGRESS, 1, Action.ACCEPT, Protocol.UDP, dports="5000-5000"
    )
    tcp_data = Pattern(vni=1, protocol=Protocol.TCP, src=TEST.ipv4, dst=SOURCE.ipv4, dport=1234)
    udp_data = Pattern(vni=2, protocol=Protocol.UDP, src=TEST.ipv4, dst=SOURCE.ipv4, dport=5000)
    return Scenario(
        name="two-targets",
        summary="Two sessions on ECS-source: inbound TCP to ECS-target (VNI 1), "
        "inbound UDP to ECS-target2 (VNI 2).",
        servers=(TEST, SOURCE, TARGET, TARGET2),
        security_groups=(
            default_group("Sg-test"),
            group_with(
                "Sg-source",
                TCP_1234_FROM_TEST,
                allow(Protocol.UDP, 5000, TEST.ipv4, "UDP 5000 from ECS-test"),
            ),
            group_with("Sg-target", VXLAN_FROM_SOURCE),
            group_with("Sg-target2", VXLAN_FROM_SOURCE),
        ),
        filters=(
            Filter(id="tt-tcp", name="tt-tcp", rules=(tcp_in,)),
            Filter(id="tt-udp", name="tt-udp", rules=(udp_in,)),
        ),
        sessions=(
            Session(
                id="tt-tcp-session",
                name="tt-tcp-session",
                filter_id="tt-tcp",
                sources=(SOURCE.port,),
                target_id=TARGET.port,
                vni=1,
                priority=1,
            ),
            Session(
                id="tt-udp-session",
                name="tt-udp-session",
                filter_id="tt-udp",
                sources=(SOURCE.port,),
                target_id=TARGET2.port,
                vni=2,
                packet_length=128,
                priority=2,
            ),
        ),
        traffic=(
            Conversation(client=TEST.name, server=SOURCE.name, port=1234),
            Conversation(
                client=TEST.name,
                server=SOURCE.name,
                port=5000,
                protocol=Protocol.UDP,
                lines=("ping", "pong!", LONG_LINE),
            ),
        ),
        expectations=(
            Expectation(TARGET.name, replace(tcp_data, payload_length=6), 2, "'hello', '12345'"),
            Expectation(TARGET.name, tcp_data, None, "handshake and ACKs of the TCP connection"),
            Expectation(
                TARGET.name, Pattern(protocol=Protocol.UDP), 0, "UDP belongs to ECS-target2"
            ),
            Expectation(
                TARGET2.name, replace(udp_data, payload_length=5), 1, "the datagram 'ping'"
            ),
            Expectation(
                TARGET2.name, replace(udp_data, payload_length=6), 1, "the datagram 'pong!'"
            ),
            Expectation(
                TARGET2.name,
                replace(udp_data, payload_length=len(LONG_LINE) + 1, frame_length=128),
                1,
                "the long datagram, cut to the session's packet_length 128",
            ),
            Expectation(
                TARGET2.name, Pattern(protocol=Protocol.TCP), 0, "TCP belongs to ECS-target"
            ),
        ),
    )


def _reject_rules() -> Scenario:
    f = "rr-filter"
    rules = (
        rule(
            "rr-in-reject",
            f,
            Direction.INGRESS,
            1,
            Action.REJECT,
            Protocol.TCP,
            src=f"{TEST2.ipv4}/32",
        ),
        rule(
            "rr-in-accept", f, Direction.INGRESS, 2, Action.ACCEPT, Protocol.TCP, dports="1234-1234"
        ),
        rule(
            "rr-out-reject",
            f,
            Direction.EGRESS,
            1,
            Action.REJECT,
            Protocol.TCP,
            dst=f"{TEST2.ipv4}/32",
        ),
        rule(
            "rr-out-accept", f, Direction.EGRESS, 2, Action.ACCEPT, Protocol.TCP, sports="1234-1234"
        ),
    )
    inbound = Pattern(vni=7, protocol=Protocol.TCP, src=TEST.ipv4, dst=SOURCE.ipv4, dport=1234)
    outbound = Pattern(vni=7, protocol=Protocol.TCP, src=SOURCE.ipv4, dst=TEST.ipv4, sport=1234)
    return Scenario(
        name="reject-rules",
        summary="Inbound and outbound TCP 1234 of ECS-source mirrored, except ECS-test2's, "
        "which higher-priority reject rules exclude.",
        servers=(TEST, TEST2, SOURCE, TARGET),
        security_groups=(
            default_group("Sg-test"),
            default_group("Sg-test2"),
            group_with(
                "Sg-source",
                TCP_1234_FROM_TEST,
                allow(Protocol.TCP, 1234, TEST2.ipv4, "TCP 1234 from ECS-test2"),
            ),
            group_with("Sg-target", VXLAN_FROM_SOURCE),
        ),
        filters=(Filter(id=f, name=f, rules=rules),),
        sessions=(
            Session(
                id="rr-session",
                name="rr-session",
                filter_id=f,
                sources=(SOURCE.port,),
                target_id=TARGET.port,
                vni=7,
                priority=1,
            ),
        ),
        traffic=(
            Conversation(client=TEST.name, server=SOURCE.name, port=1234, replies=("ok",)),
            Conversation(client=TEST2.name, server=SOURCE.name, port=1234, replies=("ok",)),
        ),
        expectations=(
            Expectation(TARGET.name, replace(inbound, payload_length=6), 2, "ECS-test's lines"),
            Expectation(TARGET.name, replace(outbound, payload_length=3), 1, "the reply 'ok'"),
            Expectation(TARGET.name, inbound, None, "handshake and ACKs, inbound"),
            Expectation(TARGET.name, outbound, None, "handshake and ACKs, outbound"),
            Expectation(TARGET.name, Pattern(src=TEST2.ipv4), 0, "inbound reject rule, priority 1"),
            Expectation(
                TARGET.name, Pattern(dst=TEST2.ipv4), 0, "outbound reject rule, priority 1"
            ),
        ),
    )


def _multi_session() -> Scenario:
    narrow = rule(
        "ms-narrow-in",
        "ms-narrow",
        Direction.INGRESS,
        1,
        Action.ACCEPT,
        Protocol.TCP,
        dports="1234-1234",
    )
    wide = rule("ms-wide-in", "ms-wide", Direction.INGRESS, 1, Action.ACCEPT, Protocol.ALL)
    to_1234 = Pattern(protocol=Protocol.TCP, src=TEST.ipv4, dst=SOURCE.ipv4, dport=1234)
    to_2345 = Pattern(protocol=Protocol.TCP, src=TEST.ipv4, dst=SOURCE.ipv4, dport=2345)
    return Scenario(
        name="multi-session",
        summary="Two sessions on ECS-source with overlapping filters: TCP 1234 goes only through "
        "the priority-1 session (VNI 10), everything else inbound through priority 2 (VNI 20).",
        servers=(TEST, SOURCE, TARGET),
        security_groups=(
            default_group("Sg-test"),
            group_with(
                "Sg-source",
                TCP_1234_FROM_TEST,
                allow(Protocol.TCP, 2345, TEST.ipv4, "TCP 2345 from ECS-test"),
            ),
            group_with("Sg-target", VXLAN_FROM_SOURCE),
        ),
        filters=(
            Filter(id="ms-narrow", name="ms-narrow", rules=(narrow,)),
            Filter(id="ms-wide", name="ms-wide", rules=(wide,)),
        ),
        sessions=(
            Session(
                id="ms-narrow-session",
                name="ms-narrow-session",
                filter_id="ms-narrow",
                sources=(SOURCE.port,),
                target_id=TARGET.port,
                vni=10,
                priority=1,
            ),
            Session(
                id="ms-wide-session",
                name="ms-wide-session",
                filter_id="ms-wide",
                sources=(SOURCE.port,),
                target_id=TARGET.port,
                vni=20,
                priority=2,
            ),
        ),
        traffic=(
            Conversation(client=TEST.name, server=SOURCE.name, port=1234),
            Conversation(client=TEST.name, server=SOURCE.name, port=2345, lines=("world",)),
        ),
        expectations=(
            Expectation(
                TARGET.name,
                replace(to_1234, vni=10, payload_length=6),
                2,
                "TCP 1234 through the priority-1 session",
            ),
            Expectation(TARGET.name, replace(to_1234, vni=10), None, "handshake and ACKs of 1234"),
            Expectation(
                TARGET.name, replace(to_1234, vni=20), 0, "mirrored once: priority 1 took it"
            ),
            Expectation(
                TARGET.name,
                replace(to_2345, vni=20, payload_length=6),
                1,
                "'world' to 2345 through the priority-2 session",
            ),
            Expectation(TARGET.name, replace(to_2345, vni=20), None, "handshake and ACKs of 2345"),
        ),
    )


ELB_TCP_PORT = 5201
ELB_UDP_PORT = 5202
ELB_STREAMS = 64  # per load and direction: 2 loads x 2 directions x 64 = 256 flows


def _elb() -> Scenario:
    """One source, one session to a group of three collectors, 256 concurrent flows."""
    ports = f"{ELB_TCP_PORT}-{ELB_UDP_PORT}"
    f = "elb-filter"
    rules = tuple(
        rule(f"elb-{d.value}-{p.value}", f, d, priority, Action.ACCEPT, p, **{key: ports})
        for d, key in ((Direction.INGRESS, "dports"), (Direction.EGRESS, "sports"))
        for priority, p in ((1, Protocol.TCP), (2, Protocol.UDP))
    )
    members = (TARGET, TARGET2, TARGET3)
    return Scenario(
        name="elb",
        summary="One session on ECS-source mirrors to a target group of three collectors "
        f"(elb): {4 * ELB_STREAMS} TCP and UDP flows, both directions, each flow to one "
        "collector.",
        servers=(TEST, SOURCE, *members),
        security_groups=(
            default_group("Sg-test"),
            group_with(
                "Sg-source",
                *(
                    GroupRule(
                        EtherType.IPV4,
                        p,
                        f"{TEST.ipv4}/32",
                        PortRange.parse(ports),
                        f"iperf3 {p.value} from ECS-test",
                    )
                    for p in (Protocol.TCP, Protocol.UDP)
                ),
            ),
            *(group_with(m.groups[0], VXLAN_FROM_SOURCE) for m in members),
        ),
        filters=(Filter(id=f, name=f, rules=rules),),
        sessions=(
            Session(
                id="elb-session",
                name="elb-session",
                filter_id=f,
                sources=(SOURCE.port,),
                target_id="elb-collectors",
                target_kind=TargetKind.ELB,
                vni=12,
                priority=1,
            ),
        ),
        traffic=(),
        expectations=(),
        groups=(CollectorGroup("elb-collectors", tuple(m.port for m in members)),),
        loads=(
            Load(TEST.name, SOURCE.name, ELB_TCP_PORT, Protocol.TCP, ELB_STREAMS),
            Load(TEST.name, SOURCE.name, ELB_UDP_PORT, Protocol.UDP, ELB_STREAMS),
        ),
        notes=(
            "every flow's packets, both directions, reach exactly one collector",
            "every packet ECS-source sent or received on those ports arrives once",
            "each collector gets some flows; max/mean of flows per collector within "
            "the bound of a fair hash (vxtap.lab.flows.balance_bound)",
            "vxtap session stats counts for each member what arrived there",
        ),
    )


def describe(scenario: Scenario) -> list[str]:
    """The scenario for people: servers, mirror configuration, traffic, expectations."""
    lines = [f"{scenario.name}: {scenario.summary}", "servers:"]
    lines += [f"  {s.name} {s.ipv4} {s.mac} groups {', '.join(s.groups)}" for s in scenario.servers]
    lines.append("filters:")
    for flt in scenario.filters:
        lines.append(f"  {flt.name}")
        for r in sorted(flt.rules, key=lambda r: (r.direction.value, r.priority)):
            fields = [
                f"{r.direction.value} priority {r.priority} {r.action.value} {r.ethertype} "
                f"{r.protocol}",
                f"src {r.source_cidr or 'any'}",
                f"dst {r.destination_cidr or 'any'}",
            ]
            if r.source_ports:
                fields.append(f"sport {r.source_ports}")
            if r.destination_ports:
                fields.append(f"dport {r.destination_ports}")
            lines.append("    " + ", ".join(fields))
    lines.append("sessions:")
    for sess in scenario.sessions:
        lines.append(
            f"  {sess.name}: {', '.join(sess.sources)} -> "
            + (
                f"target group {sess.target_id} ({', '.join(scenario.target_ports(sess))})"
                if sess.target_kind is TargetKind.ELB
                else sess.target_id
            )
            + ", "
            f"filter {sess.filter_id}, priority {sess.priority}, vni {sess.vni}, "
            f"packet_length {sess.packet_length}" + ("" if sess.enabled else ", disabled")
        )
    lines.append("traffic:")
    for c in scenario.traffic:
        flag = "-u " if c.protocol is Protocol.UDP else ""
        typed = " / ".join(map(shorten, c.lines))
        lines.append(
            f"  {c.server}: nc {flag}-l {c.port}; {c.client}: nc {flag}"
            f"{scenario.server(c.server).ipv4} {c.port}, types {typed}"
            + (f"; answers {' / '.join(map(shorten, c.replies))}" if c.replies else "")
        )
    for load in scenario.loads:
        flag = "-u " if load.protocol is Protocol.UDP else ""
        lines.append(
            f"  {load.server}: iperf3 -s -p {load.port}; {load.client}: iperf3 {flag}-c "
            f"{scenario.server(load.server).ipv4} -p {load.port} --bidir -P {load.streams} "
            f"-b {load.bitrate} -l {load.length}"
        )
    if scenario.outage is not None:
        lines.append(f"  mid-run: the collector on {scenario.outage} is stopped, later started")
    lines.append("expectations:")
    lines += [f"  {e.describe()}" for e in scenario.expectations]
    lines += [f"  {note}" for note in scenario.notes]
    return lines


# --- breaking a scenario on purpose, to see `verify` name the cause -----------------------

WRONG_PORT = 4321


def _wrong_rule(s: Scenario) -> Scenario:
    """Every TCP/UDP accept rule looks at destination port 4321 instead."""
    for flt in s.filters:
        for r in flt.rules:
            if r.action is Action.ACCEPT and r.protocol.has_ports:
                s = s.with_rule(r.id, destination_ports={"start": WRONG_PORT, "end": WRONG_PORT})
    return s


def _no_vxlan(s: Scenario) -> Scenario:
    """Every target's security groups lose the rules that let VXLAN (UDP 4789) in."""
    for name in s.targets:
        for group in s.server(name).groups:
            s = s.without_group_rule(group, 4789)
    return s


def _collector_down(s: Scenario) -> Scenario:
    """The collector of a group's second member stops mid-run, and starts again later."""
    if not s.groups:
        raise ValueError(f"scenario {s.name!r} has no target group: collector-down needs one")
    member = s.server_by_port(s.groups[0].members[min(1, len(s.groups[0].members) - 1)])
    return replace(s, outage=member.name)


def _disabled(s: Scenario) -> Scenario:
    for session in s.sessions:
        s = s.with_session(session.name, enabled=False)
    return s


BREAKS: dict[str, tuple[Callable[[Scenario], Scenario], str]] = {
    "wrong-rule": (_wrong_rule, f"every TCP/UDP accept rule matches destination port {WRONG_PORT}"),
    "no-4789": (_no_vxlan, "the targets' security groups do not allow UDP 4789"),
    "disabled": (_disabled, "every session is disabled"),
    "collector-down": (
        _collector_down,
        "one collector of the target group is stopped mid-run and started again",
    ),
}


def broken(scenario: Scenario, breaks: Iterable[str]) -> Scenario:
    """`scenario` with the named breaks applied, in order."""
    for name in breaks:
        if name not in BREAKS:
            raise KeyError(f"unknown break {name!r}; known: {', '.join(sorted(BREAKS))}")
        scenario = BREAKS[name][0](scenario)
    return scenario


SCENARIOS: dict[str, Scenario] = {
    s.name: s for s in (_seed(), _two_targets(), _reject_rules(), _multi_session(), _elb())
}


def get(name: str) -> Scenario:
    try:
        return SCENARIOS[name]
    except KeyError:
        raise KeyError(
            f"unknown scenario {name!r}; known: {', '.join(sorted(SCENARIOS))}"
        ) from None
