"""`Dataplane.apply` is all or nothing for the tunnel map and the nft table.

A failed apply (a plan larger than the tunnel map, a map that fills up midway, nft
refusing the rules) leaves the kernel exactly as the last good apply made it, and
a first apply that fails leaves nothing behind. Before, a plan of 70,000 pairs
left 65,536 entries in the tunnel map until the next apply.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest

from support.dataplane_lan import Lan, rule, session, state
from vxtap.dataplane.bpf import asm
from vxtap.dataplane.kernel import Dataplane, DataplaneError
from vxtap.dataplane.plan import compile_plan
from vxtap.model import DesiredState, Direction, Filter, Protocol

pytestmark = pytest.mark.netns

TRAFFIC = [(4, "192.168.0.230", 40000, 5000, 20, 10)]


def udp_filter() -> Filter:
    return Filter(
        id="f",
        name="f",
        rules=(
            rule("f-in", 1, protocol=Protocol.UDP),
            rule("f-out", 1, direction=Direction.EGRESS, protocol=Protocol.UDP),
        ),
    )


def good_state() -> DesiredState:
    return state([udp_filter()], [session("s", "f", 1, vni=7)], "good")


def assert_still_good(lan: Lan, good: object) -> None:
    assert lan.dataplane.drift(good) == []  # type: ignore[arg-type]
    # A fresh object (what a restarted agent sees) agrees: map, table, devices.
    fresh = Dataplane(netns=lan.source.name, encapsulation=lan.dataplane.encapsulation)
    assert fresh.drift(good) == []  # type: ignore[arg-type]
    with lan.capture() as mirrors:
        lan.send_udp(lan.test, TRAFFIC)
    assert Counter(m.vni for m in mirrors) == {7: 10}


def test_a_plan_larger_than_the_tunnel_map_changes_nothing(lan: Lan) -> None:
    good = compile_plan(good_state())
    lan.dataplane.apply(good)
    sessions = [session(f"s{i:05d}", "f", 1 + i % 32766) for i in range(70_000)]
    huge = compile_plan(state([udp_filter()], sessions, "huge"))
    assert len(huge.tunnels) == 70_000
    with pytest.raises(DataplaneError, match=r"70,000 .* the tunnel map holds 65,536"):
        lan.dataplane.apply(huge)
    assert_still_good(lan, good)


def test_a_tunnel_map_that_fills_up_midway_is_rolled_back(lan: Lan) -> None:
    good = compile_plan(good_state())
    lan.dataplane.apply(good)
    # Old and new pairs together pass the map's size: the last new entry does not fit
    # while the old one is still in use (stale entries go only after the rules).
    (old,) = good.tunnels
    keys = [k for k in range(1, asm.MAP_MAX_ENTRIES + 2) if k != old.key]
    new = dataclasses.replace(
        good,
        digest="1" * 32,
        tunnels=tuple(
            dataclasses.replace(old, key=k, session_id=f"x{k}") for k in keys[: asm.MAP_MAX_ENTRIES]
        ),
    )
    with pytest.raises(DataplaneError, match="tunnel map"):
        lan.dataplane.apply(new)
    assert_still_good(lan, good)


def test_a_first_apply_that_fails_leaves_nothing(lan: Lan) -> None:
    plan = compile_plan(good_state())
    broken = dataclasses.replace(
        plan,
        digest="0" * 32,
        chain_rules=tuple(
            (name, text.replace('dup to "vxtap-mk0"', 'dup to "nope0"'))
            for name, text in plan.chain_rules
        ),
    )
    with pytest.raises(DataplaneError, match="nft refused the ruleset"):
        lan.dataplane.apply(broken)
    assert lan.dataplane.leftovers() == []
    lan.dataplane.apply(plan)  # and the next apply starts from a clean kernel
    assert_still_good(lan, plan)
