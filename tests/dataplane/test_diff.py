"""`vxtap.dataplane.diff`: where a snapshot of the kernel differs from a plan (pure, no
root). The namespace tests check the same problems against a real kernel."""

from __future__ import annotations

import dataclasses

from support.dataplane_lan import TARGET6_PORT, rule, session, state
from vxtap.dataplane import diff
from vxtap.dataplane.bpf import asm
from vxtap.dataplane.kernel import nftables
from vxtap.dataplane.kernel.snapshot import KernelSnapshot, Link, Route, TunnelMap
from vxtap.dataplane.plan import KernelPlan, compile_plan
from vxtap.model import Filter, Protocol

UDP = Filter(id="f", name="f", rules=(rule("f-udp", 1, protocol=Protocol.UDP),))
PORTS = (32768, 60999)
LINKS = {
    "vxtap-vx0": Link(2, "vxlan", True, None, True, 4789, 1500),
    "vxtap-mk1": Link(3, "veth", True, "vxtap-mk0", False, None, 65535),
    "vxtap-mk0": Link(4, "veth", True, "vxtap-mk1", False, None, 65535),
    "vxtap-pr1": Link(5, "veth", True, "vxtap-pr0", False, None, 65535),
    "vxtap-pr0": Link(6, "veth", True, "vxtap-pr1", False, None, 65535),
}


def plan(sessions: int = 1, revision: str = "1") -> KernelPlan:
    return compile_plan(
        state([UDP], [session(f"s{i}", "f", 1 + i, vni=1 + i) for i in range(sessions)], revision)
    )


def shown(p: KernelPlan) -> KernelSnapshot:
    """What the kernel shows once `p` was applied (program encapsulation)."""
    routes = {t.remote: Route(1500, 9, "192.168.0.230") for t in p.tunnels}
    entries = diff.expected_tunnel_map(p, 2, routes, PORTS)
    table = nftables.table_state([*(c.name for c in p.chains), f"plan_{p.digest}_4_6"])
    return KernelSnapshot(
        links=LINKS,
        device_mtus={},
        device_indexes={},
        offloads={name: () for name in diff.COPY_DEVICES},
        filters={(d, h): ((diff.program_name(k), 100),) for d, h, k in diff.PROGRAMS},
        # The program counts in the value's tail; those bytes are not compared.
        tunnel_map=TunnelMap(7, asm.VALUE_SIZE, {k: v[:-1] + b"\x05" for k, v in entries.items()}),
        table=table,
        rule_counts={c.name: c.rules for c in p.chains if c.hook is not None},
        routes=routes,
        port_range=PORTS,
    )


def problems(snapshot: KernelSnapshot, p: KernelPlan) -> list[str]:
    expected = diff.expected_tunnel_map(p, 2, snapshot.routes, snapshot.port_range)
    return diff.problems(snapshot, p, expected)


def test_a_kernel_that_shows_the_plan_has_no_problem() -> None:
    p = plan(3)
    assert problems(shown(p), p) == []


def test_drift_is_each_objects_problems_one_after_the_other() -> None:
    p = plan()
    nothing = dataclasses.replace(
        shown(p), links={}, offloads={}, filters={}, tunnel_map=None, table=None, rule_counts={}
    )
    assert diff.problems(nothing, p, None) == [
        *(f"device {name} is missing" for name in ("vxtap-vx0", *diff.COPY_DEVICES)),
        "the tunnel map is missing",
        "nft table netdev vxtap is missing",
    ]


def test_devices_that_are_not_a_pair_or_not_veths() -> None:
    links = {
        **LINKS,
        "vxtap-mk0": dataclasses.replace(LINKS["vxtap-mk0"], peer="vxtap-pr1"),
        "vxtap-pr1": dataclasses.replace(LINKS["vxtap-pr1"], kind="dummy"),
    }
    assert not diff.paired(links, "vxtap-mk0", "vxtap-mk1")
    assert diff.device_problems(links, {}) == [
        "devices vxtap-mk0 and vxtap-mk1 are not a pair",
        "device vxtap-pr1 is not a veth",
    ]


def test_outdated_missing_and_foreign_programs() -> None:
    p = plan()
    snapshot = shown(p)
    (mark, _, _), (priority, _, _), (egress, _, _) = diff.PROGRAMS
    filters = {
        (mark, "ingress"): (("vxtap-mirror-00000000", 1),),
        (priority, "ingress"): (),
        (egress, "egress"): (
            ("foreign", 2),
            (diff.program_name(asm.ProgramKind.PRIORITY_TO_MARK), 3),
        ),
    }
    mirror = diff.program_name(asm.ProgramKind.MIRROR)
    assert diff.program_problems(snapshot.links, filters) == [
        f"tc ingress of {mark} has ['vxtap-mirror-00000000'], not [{mirror}]",
        f"tc ingress of {priority} has no programs, not [{mirror}]",
        f"tc egress of {egress} has ['foreign', "
        f"'{diff.program_name(asm.ProgramKind.PRIORITY_TO_MARK)}'], "
        f"not [{diff.program_name(asm.ProgramKind.PRIORITY_TO_MARK)}]",
    ]
    assert not diff.attached(filters[mark, "ingress"], asm.ProgramKind.MIRROR)


def test_tunnel_map_entries_missing_different_or_extra() -> None:
    p = plan(3)
    snapshot = shown(p)
    assert snapshot.tunnel_map is not None
    entries = dict(snapshot.tunnel_map.entries)
    first, second = list(entries)[:2]
    del entries[first]
    entries[second] = asm.tunnel_value(
        vni=99, remote="192.168.0.9", local=None, snaplen=96, ifindex=2
    )
    entries[12345] = entries[second]
    changed = dataclasses.replace(snapshot, tunnel_map=TunnelMap(7, asm.VALUE_SIZE, entries))
    assert problems(changed, p) == [
        "2 tunnel map entries are missing or differ",
        "1 tunnel map entries are not in the plan",
    ]
    # Without a VXLAN device nothing can be compared (its ifindex is in every entry).
    assert diff.tunnel_map_problems(changed.tunnel_map, None) == []


def test_nft_table_of_another_plan_with_missing_extra_and_damaged_chains() -> None:
    p = plan(3)
    chains = [c.name for c in p.chains]
    base = next(c.name for c in p.chains if c.hook is not None)
    kept = [c for c in chains[6:] if c != base]
    table = nftables.table_state([*kept, base, "stray", "plan_0ld_4_5"])
    counts = {base: 0}
    missing = [c for c in chains if c not in kept and c != base]
    assert diff.damaged_chains(p, table, counts) == [base]
    assert diff.nft_problems(p, table, counts, LINKS) == [
        f"nft table holds plan 0ld, not {p.digest}",
        *(f"nft chain {name} is missing" for name in missing[:5]),
        f"... {len(missing) - 5} more nft chains are missing",
        "nft chain stray is not in the plan",
        f"nft base chain {base} does not hold the plan's rules",
        "nft rules are stale: their dup targets had ifindex (4, 5)",
    ]


def test_incremental_touches_only_the_chains_that_differ() -> None:
    old, new = plan(2), plan(3, "2")
    assert diff.incremental(old, old, "netdev vxtap") == (["add table netdev vxtap"], set())
    script, rewritten = diff.incremental(old, new, "netdev vxtap") or ([], set())
    added = {c for c, _ in new.chain_defs} - {c for c, _ in old.chain_defs}
    assert added and added <= rewritten
    assert not any(line.startswith("flush table") for line in script)
    base = next(c.name for c in old.chains if c.hook is not None)
    _, refilled = diff.incremental(old, old, "netdev vxtap", [base]) or ([], set())
    assert refilled == {base}


def test_a_changed_chain_definition_needs_a_full_replace() -> None:
    old = plan()
    (name, line), *rest = old.chain_defs
    redefined = dataclasses.replace(old, chain_defs=((name, line + " # changed"), *rest))
    assert diff.incremental(old, redefined, "netdev vxtap") is None


def test_the_tunnel_value_follows_the_encapsulation_and_the_route() -> None:
    p = compile_plan(
        state([UDP], [session("s", "f", 1), session("t", "f", 2, target=TARGET6_PORT)])
    )
    four, six = sorted(p.tunnels, key=lambda t: t.session_id)
    route = Route(1400, 9, "192.168.0.230")
    routes = {four.remote: route, six.remote: Route(1500, 9, None)}
    in_program = diff.expected_tunnel_map(p, 2, routes, PORTS)
    assert in_program[four.key] == asm.tunnel_value(
        vni=four.vni,
        remote=four.remote,
        local="192.168.0.230",
        snaplen=four.snaplen,
        ifindex=9,
        ports=PORTS,
    )
    # IPv6 targets, and every target with encapsulation="device", go through the device.
    assert in_program[six.key] == asm.tunnel_value(
        vni=six.vni, remote=six.remote, local=six.local, snaplen=six.snaplen, ifindex=2
    )
    by_device = diff.expected_tunnel_map(p, 2, routes, None)
    assert by_device[four.key] == asm.tunnel_value(
        vni=four.vni, remote=four.remote, local=four.local, snaplen=four.snaplen, ifindex=2
    )
