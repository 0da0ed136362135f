"""The reference evaluator against docs/behaviour.md §2: examples and properties."""

from __future__ import annotations

import ipaddress
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vxtap.evaluate import (
    ETHERTYPE_IPV4,
    ETHERTYPE_IPV6,
    Outcome,
    Packet,
    Verdict,
    explain,
    port_by_name,
    rule_mismatch,
)
from vxtap.model import (
    Action,
    DesiredState,
    Direction,
    EtherType,
    Filter,
    Port,
    PortRange,
    Protocol,
    Rule,
    Session,
)

SOURCE = Port(id="p-src", host="h1", device="eth0", ipv4=("192.168.0.230",))
TARGET = Port(id="p-tgt", host="h2", device="eth0", ipv4=("192.168.0.164",))


def seed_state() -> DesiredState:
    rule = Rule(
        id="r1",
        filter_id="f1",
        direction=Direction.INGRESS,
        priority=1,
        action=Action.ACCEPT,
        ethertype=EtherType.IPV4,
        protocol=Protocol.TCP,
        source_cidr=ipaddress.ip_network("192.168.0.161/32"),
        destination_cidr=ipaddress.ip_network("192.168.0.230/32"),
        destination_ports=PortRange(start=1234, end=1234),
    )
    return DesiredState(
        host="h1",
        revision="1",
        ports=(SOURCE,),
        sessions=(
            Session(
                id="s1",
                name="seed",
                filter_id="f1",
                sources=("p-src",),
                target_id="p-tgt",
                priority=1,
            ),
        ),
        filters=(Filter(id="f1", name="tcp-in", rules=(rule,)),),
        targets=(TARGET,),
    )


def test_seed_packet_is_mirrored_by_the_seed_session() -> None:
    packet = Packet.ip(Protocol.TCP, "192.168.0.161", "192.168.0.230", 38944, 1234)
    verdict = explain(seed_state(), "p-src", Direction.INGRESS, packet)
    assert (verdict.session_id, verdict.rule_id, verdict.vni, verdict.target_id) == (
        "s1",
        "r1",
        1,
        "p-tgt",
    )
    assert verdict.mirrored


@pytest.mark.parametrize(
    ("direction", "packet", "why"),
    [
        (Direction.EGRESS, Packet.ip(6, "192.168.0.161", "192.168.0.230", 1, 1234), "no egress"),
        (Direction.INGRESS, Packet.ip(17, "192.168.0.161", "192.168.0.230", 1, 1234), "none of"),
        (Direction.INGRESS, Packet.ip(6, "192.168.0.161", "192.168.0.230", 1, 1235), "none of"),
        (Direction.INGRESS, Packet.ip(6, "192.168.0.162", "192.168.0.230", 1, 1234), "none of"),
        (Direction.INGRESS, Packet.non_ip(), "never matches"),
        (Direction.INGRESS, Packet.ip(6, "::1", "::2", 1, 1234), "none of"),
    ],
)
def test_packets_outside_the_seed_rule_are_not_mirrored(
    direction: Direction, packet: Packet, why: str
) -> None:
    verdict = explain(seed_state(), "p-src", direction, packet)
    assert not verdict.mirrored
    assert why in verdict.trials[0].reason


def test_other_port_and_mirror_output_are_explained() -> None:
    packet = Packet.ip(17, "192.168.0.230", "192.168.0.164", 5555, 4789)
    assert "not a source" in explain(seed_state(), "p-tgt", Direction.EGRESS, packet).reason
    assert "mirror output" in explain(seed_state(), "p-src", Direction.EGRESS, packet).reason


def test_rule_mismatch_names_the_field() -> None:
    rule = seed_state().filters[0].rules[0]
    assert rule_mismatch(rule, Packet.ip(6, "192.168.0.161", "192.168.0.230", 9, 80)) == (
        "destination port 80 is not in 1234-1234"
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"ethertype": ETHERTYPE_IPV4, "protocol": 6, "src": "10.0.0.1", "dst": "10.0.0.2"},
            "needs sport and dport",
        ),
        (
            {"ethertype": ETHERTYPE_IPV4, "protocol": 1, "src": "10.0.0.1", "dst": "::2"},
            "dst ::2 is not an IPv4 address",
        ),
        ({"ethertype": 0x0806, "protocol": 6}, "non-IP frame (ethertype 0x0806) has no protocol"),
        (
            {"ethertype": ETHERTYPE_IPV6, "protocol": 58, "src": "::1", "dst": "::2", "sport": 1},
            "only TCP and UDP packets have ports",
        ),
        ({"ethertype": ETHERTYPE_IPV6, "src": "::1", "dst": "::2"}, "needs protocol"),
    ],
)
def test_inconsistent_packets_are_refused_with_a_clear_message(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Packet.model_validate(kwargs)


def test_port_by_name_accepts_id_and_host_device() -> None:
    state = seed_state()
    assert port_by_name(state, "h1/eth0") == SOURCE
    assert port_by_name(state, "p-src") == SOURCE
    assert port_by_name(state, "h1/eth9") is None


# --- properties -----------------------------------------------------------------------------

V4 = [ipaddress.ip_address(f"10.0.0.{i}") for i in range(8)]
V6 = [ipaddress.ip_address(f"fd00::{i}") for i in range(8)]
PORTS = ("p0", "p1")


@st.composite
def cidrs(draw: st.DrawFn, ethertype: EtherType) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    base = draw(st.sampled_from(V4 if ethertype is EtherType.IPV4 else V6))
    width = 32 if ethertype is EtherType.IPV4 else 128
    prefix = draw(st.sampled_from([0, width - 3, width - 2, width - 1, width]))
    return ipaddress.ip_network(f"{base}/{prefix}", strict=False)


port_ranges = st.tuples(st.integers(1, 6), st.integers(0, 3)).map(
    lambda t: PortRange(start=t[0], end=t[0] + t[1])
)


@st.composite
def rules(draw: st.DrawFn, filter_id: str, index: int, priority: int) -> Rule:
    ethertype = draw(st.sampled_from(EtherType))
    protocols = [Protocol.TCP, Protocol.UDP, Protocol.ALL]
    protocols.append(Protocol.ICMP if ethertype is EtherType.IPV4 else Protocol.ICMPV6)
    protocol = draw(st.sampled_from(protocols))
    ports = protocol.has_ports
    return Rule(
        id=f"{filter_id}-r{index}",
        filter_id=filter_id,
        direction=draw(st.sampled_from(Direction)),
        priority=priority,
        action=draw(st.sampled_from(Action)),
        ethertype=ethertype,
        protocol=protocol,
        source_cidr=draw(st.none() | cidrs(ethertype)),
        destination_cidr=draw(st.none() | cidrs(ethertype)),
        source_ports=draw(st.none() | port_ranges) if ports else None,
        destination_ports=draw(st.none() | port_ranges) if ports else None,
    )


@st.composite
def filters(draw: st.DrawFn, filter_id: str) -> Filter:
    priorities = draw(st.lists(st.integers(1, 65535), max_size=6, unique=True))
    return Filter(
        id=filter_id,
        name=filter_id,
        rules=tuple(draw(rules(filter_id, i, p)) for i, p in enumerate(priorities)),
    )


@st.composite
def states(draw: st.DrawFn) -> DesiredState:
    filter_list = [draw(filters(f"f{i}")) for i in range(draw(st.integers(1, 3)))]
    priorities = draw(st.lists(st.integers(1, 32766), min_size=0, max_size=4, unique=True))
    sessions = tuple(
        Session(
            id=f"s{i}",
            name=f"s{i}",
            filter_id=draw(st.sampled_from(filter_list)).id,
            sources=tuple(draw(st.sets(st.sampled_from(PORTS), min_size=1))),
            target_id="t",
            vni=i + 10,
            priority=priority,
            enabled=draw(st.booleans()),
        )
        for i, priority in enumerate(priorities)
    )
    return DesiredState(
        host="h",
        revision="r",
        ports=tuple(Port(id=p, host="h", device=p) for p in PORTS),
        sessions=sessions,
        filters=tuple(filter_list),
        targets=(Port(id="t", host="h2", device="eth0", ipv4=("10.9.9.9",)),),
    )


@st.composite
def packets(draw: st.DrawFn) -> Packet:
    kind = draw(st.sampled_from(["v4", "v6", "non-ip"]))
    if kind == "non-ip":
        return Packet.non_ip(draw(st.sampled_from([0x0806, 0x88CC, 0x8100])))
    pool = V4 if kind == "v4" else V6
    protocol = draw(st.sampled_from([6, 17, 1 if kind == "v4" else 58, 47]))
    ports = protocol in (6, 17)
    return Packet.ip(
        protocol,
        draw(st.sampled_from(pool)),
        draw(st.sampled_from(pool)),
        draw(st.integers(1, 10)) if ports else None,
        draw(st.integers(1, 10)) if ports else None,
    )


def first_match(session_filter: Filter, direction: Direction, packet: Packet) -> Rule | None:
    """docs/behaviour.md §2.2, restated independently: the matching rule of smallest priority."""
    matching = [
        r
        for r in session_filter.rules
        if r.direction is direction and rule_mismatch(r, packet) is None
    ]
    return min(matching, key=lambda r: r.priority, default=None)


def independent_verdict(
    state: DesiredState, port: str, direction: Direction, packet: Packet
) -> tuple[str | None, str | None]:
    """docs/behaviour.md §2: "the least session priority of sessions whose first match accepts"."""
    if not packet.is_ip:
        return (None, None)
    filters_by_id = {f.id: f for f in state.filters}
    candidates = []
    for session in state.sessions:
        if not session.enabled or port not in session.sources:
            continue
        rule = first_match(filters_by_id[session.filter_id], direction, packet)
        if rule is not None and rule.action is Action.ACCEPT:
            candidates.append((session.priority, session.id, rule.id))
    if not candidates:
        return (None, None)
    _, session_id, rule_id = min(candidates)
    return (session_id, rule_id)


directions = st.sampled_from(Direction)
ports = st.sampled_from(PORTS)


@settings(max_examples=200)
@given(states(), ports, directions, packets())
def test_verdict_equals_the_independent_formulation(
    state: DesiredState, port: str, direction: Direction, packet: Packet
) -> None:
    verdict = explain(state, port, direction, packet)
    assert (verdict.session_id, verdict.rule_id) == independent_verdict(
        state, port, direction, packet
    )


@settings(max_examples=200)
@given(states(), ports, directions, packets())
def test_trials_tell_each_sessions_story(
    state: DesiredState, port: str, direction: Direction, packet: Packet
) -> None:
    verdict = explain(state, port, direction, packet)
    mine = [s for s in state.sessions if port in s.sources]
    assert [t.session_id for t in verdict.trials] == [
        s.id for s in sorted(mine, key=lambda s: s.priority)
    ]
    outcomes = [t.outcome for t in verdict.trials]
    # Mirrored at most once, and every later session is not reached.
    assert outcomes.count(Outcome.MIRRORED) == (1 if verdict.mirrored else 0)
    if verdict.mirrored:
        after = outcomes[outcomes.index(Outcome.MIRRORED) + 1 :]
        assert set(after) <= {Outcome.NOT_REACHED}
        session = next(s for s in state.sessions if s.id == verdict.session_id)
        assert session.enabled and (verdict.vni, verdict.target_id) == (session.vni, "t")
    else:
        assert Outcome.NOT_REACHED not in outcomes
    for trial, session in zip(verdict.trials, sorted(mine, key=lambda s: s.priority), strict=True):
        if not session.enabled:
            assert trial.outcome in (Outcome.DISABLED, Outcome.NOT_REACHED)
        if trial.outcome in (Outcome.MIRRORED, Outcome.REJECTED):
            filter_ = next(f for f in state.filters if f.id == session.filter_id)
            assert trial.rule_id == getattr(first_match(filter_, direction, packet), "id", None)


@given(states(), ports, directions, packets())
def test_order_of_the_state_does_not_matter(
    state: DesiredState, port: str, direction: Direction, packet: Packet
) -> None:
    shuffled = state.model_copy(
        update={
            "sessions": tuple(reversed(state.sessions)),
            "filters": tuple(
                f.model_copy(update={"rules": tuple(reversed(f.rules))})
                for f in reversed(state.filters)
            ),
        }
    )
    a, b = (explain(s, port, direction, packet) for s in (state, shuffled))
    assert (a.session_id, a.rule_id) == (b.session_id, b.rule_id)


@given(states(), ports, directions, packets())
def test_a_reject_all_rule_first_turns_a_session_off(
    state: DesiredState, port: str, direction: Direction, packet: Packet
) -> None:
    verdict = explain(state, port, direction, packet)
    if not verdict.mirrored or not packet.is_ip:
        return
    session = next(s for s in state.sessions if s.id == verdict.session_id)
    reject_all = [
        Rule(
            id=f"reject-{ethertype}",
            filter_id=session.filter_id,
            direction=direction,
            priority=1,
            action=Action.REJECT,
            ethertype=ethertype,
            protocol=Protocol.ALL,
        )
        for ethertype in EtherType
    ]
    # A private copy of the filter so that other sessions sharing it stay unchanged.
    old = next(f for f in state.filters if f.id == session.filter_id)
    private = Filter(
        id="private",
        name="private",
        rules=(
            *reject_all,
            *(r.model_copy(update={"priority": r.priority + 1}) for r in old.rules),
        ),
    )
    changed = state.model_copy(
        update={
            "filters": (*state.filters, private),
            "sessions": tuple(
                s.model_copy(update={"filter_id": "private"}) if s.id == session.id else s
                for s in state.sessions
            ),
        }
    )
    after = explain(changed, port, direction, packet)
    assert after.session_id != session.id
    assert next(t for t in after.trials if t.session_id == session.id).outcome is Outcome.REJECTED


@given(st.sampled_from(EtherType), st.integers(0, 255), st.sampled_from(Direction))
def test_all_matches_every_protocol_of_its_ethertype_only(
    ethertype: EtherType, protocol: int, direction: Direction
) -> None:
    rule = Rule(
        id="r",
        filter_id="f",
        direction=direction,
        priority=1,
        action=Action.ACCEPT,
        ethertype=ethertype,
        protocol=Protocol.ALL,
    )
    ports = (1, 2) if protocol in (6, 17) else (None, None)
    v4 = Packet.ip(protocol, "10.0.0.1", "10.0.0.2", *ports)
    v6 = Packet.ip(protocol, "fd00::1", "fd00::2", *ports)
    assert (rule_mismatch(rule, v4) is None) == (ethertype is EtherType.IPV4)
    assert (rule_mismatch(rule, v6) is None) == (ethertype is EtherType.IPV6)


def test_non_ip_frames_never_match_even_an_all_rule() -> None:
    state = seed_state()
    rules_all = tuple(
        Rule(
            id=f"all-{e}-{d}",
            filter_id="f1",
            direction=d,
            priority=i + 1,
            action=Action.ACCEPT,
            ethertype=e,
            protocol=Protocol.ALL,
        )
        for i, (e, d) in enumerate(itertools.product(EtherType, Direction))
    )
    state = state.model_copy(update={"filters": (Filter(id="f1", name="all", rules=rules_all),)})
    for direction in Direction:
        verdict: Verdict = explain(state, "p-src", direction, Packet.non_ip(0x0806))
        assert not verdict.mirrored
        assert verdict.trials[0].outcome is Outcome.NO_MATCH


def test_non_first_fragments_carry_no_ports_and_port_0_is_outside_every_range() -> None:
    """docs/dataplane.md: a non-first fragment never matches a rule with a port range
    (it can match rules without ports); a range is exactly that range."""

    def rule(id: str, priority: int, **fields: object) -> Rule:
        return Rule.model_validate(
            {
                "id": id,
                "filter_id": "f1",
                "direction": Direction.INGRESS,
                "priority": priority,
                "action": Action.ACCEPT,
                "ethertype": EtherType.IPV4,
                "protocol": Protocol.UDP,
                **fields,
            }
        )

    any_port = rule("any-port", 1, destination_ports=PortRange(start=1, end=65535))
    no_ports = rule("no-ports", 2)
    state = seed_state().model_copy(
        update={"filters": (Filter(id="f1", name="f", rules=(any_port, no_ports)),)}
    )
    later = Packet.ip(17, "10.0.0.1", "10.0.0.2", non_first_fragment=True)
    assert str(later) == "UDP 10.0.0.1 > 10.0.0.2 (non-first fragment)"
    assert rule_mismatch(any_port, later) == "a non-first fragment carries no ports"
    assert explain(state, "p-src", Direction.INGRESS, later).rule_id == "no-ports"
    first = Packet.ip(17, "10.0.0.1", "10.0.0.2", 5, 80)  # a first fragment: ports as usual
    assert explain(state, "p-src", Direction.INGRESS, first).rule_id == "any-port"
    zero = Packet.ip(17, "10.0.0.1", "10.0.0.2", 5, 0)
    assert rule_mismatch(any_port, zero) == "destination port 0 is not in 1-65535"
    assert explain(state, "p-src", Direction.INGRESS, zero).rule_id == "no-ports"
    with pytest.raises(ValueError, match="a non-first fragment carries no ports"):
        Packet.ip(6, "10.0.0.1", "10.0.0.2", 1, 2, non_first_fragment=True)
    with pytest.raises(ValueError, match="has no fragment offset"):
        Packet(ethertype=0x0806, non_first_fragment=True)
