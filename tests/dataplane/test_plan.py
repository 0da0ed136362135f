"""compile_plan without a kernel: structure, order, determinism, limits."""

from __future__ import annotations

import ipaddress
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from support import nft_reference
from support.dataplane_lan import SOURCE_PORT, TARGET6_PORT, TARGET_PORT, rule, session, state
from vxtap.dataplane import plan as plan_module
from vxtap.dataplane.plan import (
    EGRESS_HOOK_PRIORITY,
    INGRESS_HOOK_PRIORITY,
    MARK_COPY_DEVICE,
    PRIORITY_COPY_DEVICE,
    CounterRef,
    PlanCompiler,
    compile_plan,
    counter_comment,
    expr_text,
    parse_counter_comment,
    rule_matches,
    session_key,
    snap_length,
)
from vxtap.model import (
    Action,
    DesiredState,
    Direction,
    EtherType,
    Filter,
    Port,
    Protocol,
    Rule,
    Session,
)

_rules_of = nft_reference.rules_of
_base_chains = nft_reference.base_chains


def two_sessions() -> DesiredState:
    a = Filter(
        id="fa",
        name="a",
        rules=(
            rule("a2", 20, filter_id="fa"),
            rule("a1", 10, Action.REJECT, protocol=Protocol.UDP, filter_id="fa"),
            rule("a-out", 1, direction=Direction.EGRESS, filter_id="fa"),
        ),
    )
    b = Filter(id="fb", name="b", rules=(rule("b1", 1, protocol=Protocol.TCP, filter_id="fb"),))
    return state([a, b], [session("s-b", "fb", 9, vni=2), session("s-a", "fa", 3, vni=1)])


def test_session_priority_then_rule_priority_first_match_decides() -> None:
    plan = compile_plan(two_sessions())
    key_a = session_key("s-a", SOURCE_PORT.id)
    key_b = session_key("s-b", SOURCE_PORT.id)
    base = _base_chains(plan)
    assert base["in_eth0"]["dev"] == "eth0"
    assert base["in_eth0"]["prio"] == INGRESS_HOOK_PRIORITY
    assert base["out_eth0"]["prio"] == EGRESS_HOOK_PRIORITY
    # Session a (priority 3) before b (priority 9), whatever the input order.
    jumps = [e[-1]["jump"]["target"] for e in _rules_of(plan, "in_eth0")]
    assert jumps == [f"s{key_a:08x}i", f"s{key_b:08x}i"]
    # In a session's chain: rule priority order; reject returns (next session), accept
    # goes to the mirror chain, which ends in accept (mirrored once, evaluation stops).
    chain = _rules_of(plan, f"s{key_a:08x}i")
    assert chain[0][-2] == {"counter": f"r{key_a:08x}i10"} and chain[0][-1] == {"return": None}
    assert chain[1][-1] == {"goto": {"target": f"m{key_a:08x}"}}
    mirror = _rules_of(plan, f"m{key_a:08x}")
    assert all(rule[-1] == {"accept": None} for rule in mirror)
    # Egress: only a has egress rules, and the mirror's own output is excluded first.
    egress = _rules_of(plan, "out_eth0")
    assert egress[0][-1] == {"return": None}
    assert {
        "match": {
            "op": "==",
            "left": {"payload": {"protocol": "udp", "field": "dport"}},
            "right": 4789,
        }
    } in egress[0]
    assert [e[-1] for e in egress[1:]] == [{"jump": {"target": f"s{key_a:08x}e"}}]


def _meta_is(key: str, value: str) -> dict[str, Any]:
    return {"match": {"op": "==", "left": {"meta": {"key": key}}, "right": value}}


def test_a_session_is_skipped_by_what_all_its_rules_start_with() -> None:
    """The jump to a session's chain carries the matches all of its rules start with, so
    a packet that fails them does not walk the chain (it would match none of its rules):
    UDP passes a session of TCP rules with two tests instead of one per rule."""
    plan = compile_plan(two_sessions())
    key_a = session_key("s-a", SOURCE_PORT.id)
    key_b = session_key("s-b", SOURCE_PORT.id)
    assert _rules_of(plan, "in_eth0") == [
        [_meta_is("protocol", "ip"), {"jump": {"target": f"s{key_a:08x}i"}}],
        [
            _meta_is("protocol", "ip"),
            _meta_is("l4proto", "tcp"),
            {"jump": {"target": f"s{key_b:08x}i"}},
        ],
    ]
    both = Filter(
        id="f",
        name="f",
        rules=(
            rule("v4", 1, protocol=Protocol.TCP),
            rule("v6", 2, protocol=Protocol.TCP, ethertype=EtherType.IPV6),
        ),
    )
    plan = compile_plan(state([both], [session("s", "f", 1)]))
    key = session_key("s", SOURCE_PORT.id)
    assert _rules_of(plan, "in_eth0") == [[{"jump": {"target": f"s{key:08x}i"}}]]


def test_mirror_chain_restores_the_production_packet_exactly() -> None:
    plan = compile_plan(two_sessions())
    key = session_key("s-a", SOURCE_PORT.id)
    by_mark, by_priority, neither = _rules_of(plan, f"m{key:08x}")
    for rule_exprs, meta, device in (
        (by_mark, "mark", MARK_COPY_DEVICE),
        (by_priority, "priority", PRIORITY_COPY_DEVICE),
    ):
        assert rule_exprs[0] == {"match": {"op": "==", "left": {"meta": {"key": meta}}, "right": 0}}
        sets = [e["mangle"]["value"] for e in rule_exprs if "mangle" in e]
        assert sets == [key, 0]  # the key for the copy, then back to 0 as it arrived
        assert {"dup": {"addr": device}} in rule_exprs
    assert neither == [{"counter": f"u{key:08x}"}, {"accept": None}]


def test_rule_match_expressions() -> None:
    r = rule(
        "r",
        1,
        ethertype=EtherType.IPV6,
        protocol=Protocol.UDP,
        src="fd00::/64",
        dst="fd00::1/128",
        sports="1-65535",
        dports="53-53",
    )
    common = [
        {"match": {"op": "==", "left": {"meta": {"key": "protocol"}}, "right": "ip6"}},
        {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "udp"}},
        {
            "match": {
                "op": "==",
                "left": {"payload": {"protocol": "ip6", "field": "saddr"}},
                "right": {"prefix": {"addr": "fd00::", "len": 64}},
            }
        },
        {
            "match": {
                "op": "==",
                "left": {"payload": {"protocol": "ip6", "field": "daddr"}},
                "right": "fd00::1",
            }
        },
    ]
    ports = [
        # 1-65535 is a condition too: port 0 is outside it.
        {
            "match": {
                "op": "==",
                "left": {"payload": {"protocol": "udp", "field": "sport"}},
                "right": {"range": [1, 65535]},
            }
        },
        {
            "match": {
                "op": "==",
                "left": {"payload": {"protocol": "udp", "field": "dport"}},
                "right": 53,
            }
        },
    ]
    # Ports only in packets that are not non-first fragments: no fragment header, or
    # one with offset 0 (two nft rules; at most one matches a packet).
    no_fragment = {"match": {"op": "==", "left": {"exthdr": {"name": "frag"}}, "right": False}}
    first = {
        "match": {"op": "==", "left": {"exthdr": {"name": "frag", "field": "frag-off"}}, "right": 0}
    }
    assert rule_matches(r) == [[*common, no_fragment, *ports], [*common, first, *ports]]
    # ALL: the ethertype only (non-IP never matches); /0 is no condition.
    everything = rule("all", 1, src="0.0.0.0/0")
    assert rule_matches(everything) == [
        [{"match": {"op": "==", "left": {"meta": {"key": "protocol"}}, "right": "ip"}}]
    ]
    icmp6 = rule("i", 1, ethertype=EtherType.IPV6, protocol=Protocol.ICMPV6)
    assert rule_matches(icmp6)[0][1]["match"]["right"] == "ipv6-icmp"
    ranged = rule("p", 1, protocol=Protocol.TCP, sports="80-200")
    (ipv4,) = rule_matches(ranged)
    assert ipv4[-1]["match"]["right"] == {"range": [80, 200]}
    offset = {"&": [{"payload": {"protocol": "ip", "field": "frag-off"}}, 0x1FFF]}
    assert ipv4[-2] == {"match": {"op": "==", "left": offset, "right": 0}}


def test_disabled_empty_foreign_and_unknown_compile_to_nothing() -> None:
    filters = [
        Filter(id="f", name="f", rules=(rule("r", 1, filter_id="f"),)),
        Filter(id="empty", name="empty"),
    ]
    sessions = [
        session("off", "f", 1, enabled=False),
        session("norules", "empty", 2),
        session("elsewhere", "f", 3, sources=("port-on-another-host",)),
        session("nosources", "f", 4, sources=()),
    ]
    plan = compile_plan(state(filters, sessions))
    assert plan.is_empty and plan.tunnels == () and plan.counters == ()
    assert plan.skipped == ()
    unknown = compile_plan(
        state(filters, [session("lost", "f", 1, target=Port(id="gone", host="h", device="x"))])
    )
    assert unknown.is_empty
    assert unknown.skipped == ("session lost: target gone is unknown or has no address",)


def test_tunnels_snap_lengths_and_addresses() -> None:
    f = Filter(id="f", name="f", rules=(rule("r", 1, filter_id="f"),))
    desired = state(
        [f],
        [
            session("v4", "f", 1, vni=5, packet_length=1460),
            session("v6", "f", 2, vni=6, packet_length=1460, target=TARGET6_PORT),
        ],
    )
    plan = compile_plan(desired)
    by_session = {t.session_id: t for t in plan.tunnels}
    # No MTU given: the kernel adapter clamps by the route's MTU when it applies.
    assert by_session["v4"].snaplen == 1460 and by_session["v6"].snaplen == 1460
    clamped = compile_plan(desired, underlay_mtu=1500)
    lengths = {t.session_id: t.snaplen for t in clamped.tunnels}
    assert lengths == {"v4": 1460, "v6": 1444}  # 1500 - 56 over IPv6
    assert snap_length(1460, "10.0.0.1", 1400) == 1364  # 1400 - 36 over IPv4
    assert (by_session["v4"].remote, by_session["v4"].local) == (
        TARGET_PORT.ipv4[0],
        SOURCE_PORT.ipv4[0],
    )
    assert (by_session["v6"].remote, by_session["v6"].local) == (
        TARGET6_PORT.ipv6[0],
        SOURCE_PORT.ipv6[0],
    )
    assert by_session["v6"].ipv6 and not by_session["v4"].ipv6
    assert snap_length(96, "10.0.0.1", 1500) == 96
    assert snap_length(1460, "10.0.0.1", 9000) == 1460
    big = compile_plan(state([f], [session("v4", "f", 1, packet_length=1460)]), underlay_mtu=9000)
    assert big.tunnels[0].snaplen == 1460


def test_deterministic_and_keys_stable_across_states() -> None:
    s = two_sessions()
    shuffled = s.model_copy(update={"sessions": tuple(reversed(s.sessions))})
    assert compile_plan(s) == compile_plan(s) == compile_plan(shuffled)
    one = compile_plan(s.model_copy(update={"sessions": s.sessions[:1]}))
    key = {t.session_id: t.key for t in compile_plan(s).tunnels}
    assert {t.session_id: t.key for t in one.tunnels} == {s.sessions[0].id: key[s.sessions[0].id]}
    assert 0 < session_key("x", "y") <= plan_module.MAX_KEY


def test_key_collisions_get_distinct_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plan_module, "session_key", lambda session_id, port_id: 42)
    f = Filter(id="f", name="f", rules=(rule("r", 1, filter_id="f"),))
    plan = compile_plan(state([f], [session("a", "f", 1), session("b", "f", 2)]))
    assert sorted(t.key for t in plan.tunnels) == [42, 43]


def test_counter_comments_round_trip() -> None:
    for ref in (
        CounterRef("r1", "rule", "s", "rule-id"),
        CounterRef("m1", "mirrored", "s"),
        CounterRef("u1", "unmirrorable", "s"),
    ):
        assert parse_counter_comment(ref.name, counter_comment(ref)) == ref
    assert parse_counter_comment("x", "somebody else's") is None


_ports = st.sampled_from([None, "1-65535", "80-80", "1000-2000"])


@st.composite
def rules(draw: st.DrawFn, filter_id: str) -> list[Rule]:
    out = []
    for priority in draw(st.sets(st.integers(1, 50), max_size=5)):
        v6 = draw(st.booleans())
        protocol = draw(
            st.sampled_from(
                [Protocol.TCP, Protocol.UDP, Protocol.ALL, Protocol.ICMPV6 if v6 else Protocol.ICMP]
            )
        )
        cidr = draw(st.sampled_from([None, "fd00::/8" if v6 else "10.0.0.0/8"]))
        out.append(
            rule(
                f"{filter_id}-{priority}-{draw(st.sampled_from(['i', 'e']))}",
                priority,
                draw(st.sampled_from(list(Action))),
                direction=draw(st.sampled_from(list(Direction))),
                ethertype=EtherType.IPV6 if v6 else EtherType.IPV4,
                protocol=protocol,
                src=cidr,
                sports=draw(_ports) if protocol.has_ports else None,
                filter_id=filter_id,
            )
        )
    # Unique (direction, priority) per filter, as the API guarantees.
    seen: dict[tuple[Direction, int], Rule] = {}
    for r in out:
        seen.setdefault((r.direction, r.priority), r)
    return list(seen.values())


@st.composite
def states(draw: st.DrawFn) -> DesiredState:
    filters = [
        Filter(id=f"f{i}", name=f"f{i}", rules=tuple(draw(rules(f"f{i}")))) for i in range(3)
    ]
    ports = [
        Port(id=f"p{i}", host="h", device=f"eth{i}", ipv4=(f"10.0.0.{i + 1}",)) for i in range(3)
    ]
    sessions = [
        Session(
            id=f"s{i}",
            name=f"s{i}",
            filter_id=draw(st.sampled_from([f.id for f in filters])),
            sources=tuple(draw(st.sets(st.sampled_from([p.id for p in ports]), max_size=3))),
            target_id=TARGET_PORT.id,
            priority=draw(st.integers(1, 100)),
            enabled=draw(st.booleans()),
        )
        for i in range(draw(st.integers(0, 4)))
    ]
    return DesiredState(
        host="h",
        revision="r",
        ports=tuple(ports),
        sessions=tuple(sessions),
        filters=tuple(filters),
        targets=(TARGET_PORT,),
    )


@settings(max_examples=150, deadline=None)
@given(states())
def test_any_state_compiles_to_a_consistent_plan(desired: DesiredState) -> None:
    plan = compile_plan(desired)
    assert plan == compile_plan(desired)
    names = [c.name for c in plan.chains]
    assert len(names) == len(set(names))
    assert len({c.name for c in plan.counters}) == len(plan.counters)
    commands = nft_reference.nft_commands(plan)
    for chain in plan.chains:
        rule_count = sum(
            1 for c in commands if "rule" in c["add"] and c["add"]["rule"]["chain"] == chain.name
        )
        assert rule_count == chain.rules
    referenced = {
        e["counter"]
        for c in commands
        if "rule" in c["add"]
        for e in c["add"]["rule"]["expr"]
        if "counter" in e
    }
    assert referenced == {c.name for c in plan.counters}
    live = {
        s.id
        for s in desired.sessions
        if s.enabled and s.sources and any(f.id == s.filter_id and f.rules for f in desired.filters)
    }
    assert {t.session_id for t in plan.tunnels} == live
    assert [nft_reference.render_command(c) for c in commands] == plan.nft_text.splitlines()


def test_a_thousand_sessions_of_ten_rules_compile() -> None:
    rng = random.Random(7)
    filters, sessions, ports = [], [], []
    for i in range(1000):
        rules_ = tuple(
            rule(
                f"r{i}-{j}",
                j + 1,
                rng.choice(list(Action)),
                protocol=Protocol.TCP,
                src=str(ipaddress.ip_network(f"10.{i % 250}.{j}.0/24")),
                dports=f"{1000 + j}-{2000 + j}",
                filter_id=f"f{i}",
            )
            for j in range(10)
        )
        filters.append(Filter(id=f"f{i}", name=f"f{i}", rules=rules_))
        ports.append(
            Port(id=f"p{i}", host="h", device=f"d{i}", ipv4=(f"10.1.{i // 250}.{i % 250}",))
        )
        sessions.append(session(f"s{i}", f"f{i}", 1, sources=(f"p{i}",)))
    desired = DesiredState(
        host="h",
        revision="big",
        ports=tuple(ports),
        sessions=tuple(sessions),
        filters=tuple(filters),
        targets=(TARGET_PORT,),
    )
    plan = compile_plan(desired)
    assert len(plan.tunnels) == 1000
    assert sum(1 for c in plan.counters if c.kind == "rule") == 10_000


def test_the_text_loaded_reads_back_as_the_json_the_tests_assert_on() -> None:
    """The structure tests read the plan's text back as nft JSON: parsing then
    rendering with the reference renderer gives the text back exactly."""
    plan = compile_plan(two_sessions())
    commands = nft_reference.nft_commands(plan)
    assert [nft_reference.render_command(c) for c in commands] == plan.nft_text.splitlines()
    # And a session chain's rules are the rule's matches as the compiler states them.
    r = rule("b1", 1, protocol=Protocol.TCP, filter_id="fb")
    key = session_key("s-b", SOURCE_PORT.id)
    (only,) = _rules_of(plan, f"s{key:08x}i")
    (match,) = rule_matches(r)
    assert only == [*match, {"counter": f"r{key:08x}i1"}, {"goto": {"target": f"m{key:08x}"}}]


def test_expressions_render_as_the_reference_renders_them() -> None:
    r = rule(
        "r", 1, ethertype=EtherType.IPV6, protocol=Protocol.UDP, src="fd00::/64", dports="53-53"
    )
    for alternative in rule_matches(r):
        for e in alternative:
            assert expr_text(e) == nft_reference.expr_text(e)
    mangle = {"mangle": {"key": {"meta": {"key": "priority"}}, "value": 0x1_002A}}
    assert expr_text(mangle) == nft_reference.expr_text(mangle) == "meta priority set 1:2a"


@settings(max_examples=60, deadline=None)
@given(states(), st.data())
def test_memoised_compile_equals_a_compile_from_scratch(
    desired: DesiredState, data: st.DataObject
) -> None:
    """Rule matches and each (session, source) pair's chains are memoised across
    compiles: a warm compile (after the previous state, as in the agent) must give
    exactly the plan a cold one gives."""
    changed = desired
    if desired.sessions:
        index = data.draw(st.integers(0, len(desired.sessions) - 1))
        edited = desired.sessions[index].model_copy(
            update={"enabled": not desired.sessions[index].enabled}
        )
        changed = desired.model_copy(
            update={"sessions": (*desired.sessions[:index], edited, *desired.sessions[index + 1 :])}
        )
    with_rules = [i for i, f in enumerate(changed.filters) if f.rules]
    if with_rules and data.draw(st.booleans()):  # and a rule's action, in a shared filter
        index = data.draw(st.sampled_from(with_rules))
        flt = changed.filters[index]
        first, *rest = flt.rules
        flipped = Action.REJECT if first.action is Action.ACCEPT else Action.ACCEPT
        edited_filter = flt.model_copy(
            update={"rules": (first.model_copy(update={"action": flipped}), *rest)}
        )
        filters = (*changed.filters[:index], edited_filter, *changed.filters[index + 1 :])
        changed = changed.model_copy(update={"filters": filters})
    compiler = PlanCompiler()
    compiler.compile(desired)  # warms the memo
    warm = compiler.compile(changed)
    cold = PlanCompiler().compile(changed)
    assert warm == cold
    assert (warm.nft_text, warm.digest, warm.chain_rules) == (
        cold.nft_text,
        cold.digest,
        cold.chain_rules,
    )


def test_a_compiler_reuses_the_pieces_of_unchanged_sessions() -> None:
    """The memo's point: an unchanged (session, source) pair's text is the very same
    object, not rebuilt (a one-session change among 1,000 rebuilds one piece)."""
    compiler = PlanCompiler()
    before = compiler.compile(two_sessions())
    fa, fb = two_sessions().filters
    edited = fb.model_copy(update={"rules": (fb.rules[0].model_copy(update={"priority": 2}),)})
    changed = two_sessions().model_copy(update={"filters": (fa, edited)})
    after = compiler.compile(changed)
    old, new = dict(before.chain_rules), dict(after.chain_rules)
    key_a = session_key("s-a", SOURCE_PORT.id)
    key_b = session_key("s-b", SOURCE_PORT.id)
    assert new[f"s{key_a:08x}i"] is old[f"s{key_a:08x}i"]  # reused
    assert new[f"s{key_b:08x}i"] != old[f"s{key_b:08x}i"]  # rebuilt: its rule changed
    assert after == PlanCompiler().compile(changed)
