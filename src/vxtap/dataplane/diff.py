"""Where the kernel differs from a `KernelPlan`: pure functions of a `KernelSnapshot`.

No I/O. Each kind of kernel object has its problems here (`device_problems`,
`program_problems`, `tunnel_map_problems`, `nft_problems`), and the conditions the
writers in `vxtap.dataplane.kernel` act on (`vxlan_ok`, `paired`, `attached`,
`damaged_chains`, `incremental`), so a problem `drift` reports and the fix `apply`
makes are decided by the same code. `drift` is `problems`, the concatenation.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from vxtap.dataplane.bpf import asm
from vxtap.dataplane.plan import (
    FAMILY,
    MARK_COPY_DEVICE,
    MARK_COPY_PEER,
    PRIORITY_COPY_DEVICE,
    PRIORITY_COPY_PEER,
    TABLE,
    VXLAN_DEVICE,
    KernelPlan,
    chunk_key,
    snap_length,
)
from vxtap.model import VXLAN_PORT

if TYPE_CHECKING:
    from vxtap.dataplane.kernel.snapshot import (
        Filter,
        Hook,
        KernelSnapshot,
        Link,
        Route,
        TableState,
        TunnelMap,
    )

# --- what vxtap keeps in the kernel (docs/dataplane.md, the pipeline) ---

COPY_PAIRS = ((MARK_COPY_DEVICE, MARK_COPY_PEER), (PRIORITY_COPY_DEVICE, PRIORITY_COPY_PEER))
COPY_PEERS = (MARK_COPY_PEER, PRIORITY_COPY_PEER)
COPY_DEVICES = tuple(name for pair in COPY_PAIRS for name in pair)
OWN_DEVICES = frozenset((VXLAN_DEVICE, *COPY_DEVICES))
# A veth drops what is longer than its MTU (is_skb_forwardable): the copies of a jumbo
# frame must cross whole (they are cut after), so the copy pairs take the largest MTU.
COPY_DEVICE_MTU = 65535
# Where each program runs. A veth zeroes skb->priority on the way (____dev_forward_skb),
# so on the priority path the key moves into the copy's mark before it crosses.
PROGRAMS = (
    (MARK_COPY_PEER, "ingress", asm.ProgramKind.MIRROR),
    (PRIORITY_COPY_PEER, "ingress", asm.ProgramKind.MIRROR),
    (PRIORITY_COPY_DEVICE, "egress", asm.ProgramKind.PRIORITY_TO_MARK),
)


def program_name(kind: asm.ProgramKind) -> str:
    """The tc filter's name: says which code it runs, so `drift` sees an outdated one."""
    return f"vxtap-{kind.value}-{asm.program_version(kind)}"


# --- devices ---


def vxlan_ok(link: Link) -> bool:
    return link.kind == "vxlan" and link.external and link.port == VXLAN_PORT


def paired(links: Mapping[str, Link], device: str, peer: str) -> bool:
    """`device` and `peer` exist and are the two ends of one veth."""
    a, b = links.get(device), links.get(peer)
    return a is not None and b is not None and a.kind == "veth" and a.peer == peer


def device_problems(links: Mapping[str, Link], offloads: Mapping[str, Sequence[str]]) -> list[str]:
    problems: list[str] = []
    vx = links.get(VXLAN_DEVICE)
    if vx is None:
        problems.append(f"device {VXLAN_DEVICE} is missing")
    elif not vxlan_ok(vx):
        problems.append(f"device {VXLAN_DEVICE} is not an external VXLAN device on 4789")
    for device, peer in COPY_PAIRS:
        for name in (device, peer):
            link = links.get(name)
            if link is None:
                problems.append(f"device {name} is missing")
            elif link.kind != "veth":
                problems.append(f"device {name} is not a veth")
        if device in links and peer in links and links[device].peer != peer:
            problems.append(f"devices {device} and {peer} are not a pair")
        for name in (device, peer):
            link = links.get(name)
            if link is not None and link.kind == "veth" and link.mtu != COPY_DEVICE_MTU:
                problems.append(f"device {name} has MTU {link.mtu}, not {COPY_DEVICE_MTU}")
    for name in (VXLAN_DEVICE, *COPY_DEVICES):
        link = links.get(name)
        if link is not None and not link.up:
            problems.append(f"device {name} is down")
        if link is not None and link.kind == "veth":
            on = offloads.get(name, ())
            if on:
                problems.append(f"device {name} has offloads on: {', '.join(on)}")
    return problems


# --- programs and the tunnel map ---


def attached(filters: Sequence[Filter], kind: asm.ProgramKind) -> bool:
    """A hook holds exactly the current program of this kind."""
    return [name for name, _ in filters] == [program_name(kind)]


def program_problems(
    links: Mapping[str, Link], filters: Mapping[Hook, Sequence[Filter]]
) -> list[str]:
    problems: list[str] = []
    for device, hook, kind in PROGRAMS:
        if device not in links:
            continue
        present = filters.get((device, hook), ())
        if not attached(present, kind):
            names = [name for name, _ in present]
            problems.append(
                f"tc {hook} of {device} has {names or 'no programs'}, not [{program_name(kind)}]"
            )
    return problems


def settings(key: int, value: bytes | None) -> bytes | None:
    """What the agent writes into a tunnel map entry and compares: a placement table
    chunk's CHUNK_SLOTS member numbers (more than an entry's settings), or an entry
    without the counters the program keeps in it."""
    if value is None:
        return None
    if key & asm.CHUNK_KEY_FLAG == asm.CHUNK_KEY_FLAG:
        return value[: asm.CHUNK_SLOTS]
    return value[: asm.VALUE_SETTINGS_SIZE]


def expected_tunnel_map(
    plan: KernelPlan,
    vxlan_index: int,
    routes: Mapping[str, Route],
    ports: tuple[int, int] | None,
) -> dict[int, bytes]:
    """The tunnel map's entries for `plan`. `ports` is None when the VXLAN device
    encapsulates; else IPv4 targets with a route get their copies encapsulated by the
    program, sent through the route's device.

    Each snap length is clamped to what fits the MTU of the route to its target now
    (docs/dataplane.md, "Truncation"): a changed MTU shows as drift and is applied."""
    # In the order they are written: a group entry only after its table and members.
    entries: dict[int, bytes] = {}
    for table_id, table in plan.tables:
        for chunk, value in enumerate(asm.chunk_values(table)):
            entries[chunk_key(table_id, chunk)] = value
    for t in plan.tunnels:
        route = routes.get(t.remote)
        snaplen = snap_length(t.snaplen, t.remote, route.mtu if route else None)
        local = t.local or (route.source if route else None)
        device = route.device if route else None
        if (
            ports is not None
            and device is not None
            and local is not None
            and ipaddress.ip_address(t.remote).version == 4
            and ipaddress.ip_address(local).version == 4
        ):
            value = asm.tunnel_value(
                vni=t.vni,
                remote=t.remote,
                local=local,
                snaplen=snaplen,
                ifindex=device,
                ports=ports,
            )
        else:
            value = asm.tunnel_value(
                vni=t.vni, remote=t.remote, local=t.local, snaplen=snaplen, ifindex=vxlan_index
            )
        entries[t.key] = value
    for g in plan.groups:
        entries[g.key] = asm.group_value(
            table_base=g.table_base,
            member_base=g.member_base,
            snaplen=g.snaplen,
            has_member=g.table_id is not None,
        )
    return entries


def differing_entries(current: Mapping[int, bytes], expected: Mapping[int, bytes]) -> list[int]:
    """The keys whose settings `current` lacks or holds otherwise."""
    return [k for k, v in expected.items() if settings(k, current.get(k)) != settings(k, v)]


def tunnel_map_problems(
    tunnel_map: TunnelMap | None, expected: Mapping[int, bytes] | None
) -> list[str]:
    """`expected` is None when it cannot be known (no VXLAN device to send through)."""
    if tunnel_map is None:
        return ["the tunnel map is missing"]
    if expected is None:
        return []
    problems: list[str] = []
    missing = differing_entries(tunnel_map.entries, expected)
    extra = tunnel_map.entries.keys() - expected.keys()
    if missing:
        problems.append(f"{len(missing)} tunnel map entries are missing or differ")
    if extra:
        problems.append(f"{len(extra)} tunnel map entries are not in the plan")
    return problems


# --- the nft table ---


def dup_indexes(links: Mapping[str, Link]) -> tuple[int, int]:
    """The ifindexes the plan's `dup` rules bind to now (0: the device is missing)."""
    mark, priority = (
        links[name].index if name in links else 0
        for name in (MARK_COPY_DEVICE, PRIORITY_COPY_DEVICE)
    )
    return mark, priority


def base_chains_present(plan: KernelPlan, table: TableState | None) -> list[str]:
    """The plan's base chains that the table has: those whose rules `drift` counts."""
    if table is None:
        return []
    present = set(table.chains)
    return [c.name for c in plan.chains if c.hook is not None and c.name in present]


def damaged_chains(
    plan: KernelPlan, table: TableState | None, rule_counts: Mapping[str, int]
) -> list[str]:
    """The plan's base chains that exist but hold another number of rules than the
    plan says (e.g. flushed by hand). Base chains only: they are a few per device,
    while listing every chain's rules takes about a second at 10,000 rules."""
    wanted = {c.name: c.rules for c in plan.chains if c.hook is not None}
    return [
        name for name in base_chains_present(plan, table) if rule_counts.get(name) != wanted[name]
    ]


def nft_problems(
    plan: KernelPlan,
    table: TableState | None,
    rule_counts: Mapping[str, int],
    links: Mapping[str, Link],
) -> list[str]:
    if table is None:
        return [f"nft table {FAMILY} {TABLE} is missing"]
    problems: list[str] = []
    if table.digest != plan.digest:
        problems.append(f"nft table holds plan {table.digest}, not {plan.digest}")
    present = set(table.chains)
    missing = [c.name for c in plan.chains if c.name not in present]
    problems.extend(f"nft chain {name} is missing" for name in missing[:5])
    if len(missing) > 5:
        problems.append(f"... {len(missing) - 5} more nft chains are missing")
    wanted = {c.name for c in plan.chains}
    problems.extend(f"nft chain {name} is not in the plan" for name in present - wanted)
    problems.extend(
        f"nft base chain {name} does not hold the plan's rules"
        for name in damaged_chains(plan, table, rule_counts)
    )
    if table.dup_indexes != dup_indexes(links):
        # `dup to` binds an ifindex: a re-created copy device leaves the rules stale.
        problems.append(f"nft rules are stale: their dup targets had ifindex {table.dup_indexes}")
    return problems


def incremental(
    old: KernelPlan, new: KernelPlan, where: str, damaged: Sequence[str] = ()
) -> tuple[list[str], set[str]] | None:
    """nft commands that turn a table holding `old` into one holding `new`, touching
    only what differs, and the chains whose rules they flush, fill or delete; None when
    a chain's definition changed (a full replace then). `damaged` chains (their rules
    changed behind our back) are flushed and re-filled."""
    old_defs, new_defs = dict(old.chain_defs), dict(new.chain_defs)
    old_rules, new_rules = dict(old.chain_rules), dict(new.chain_rules)
    old_counters, new_counters = dict(old.counter_defs), dict(new.counter_defs)
    if any(old_defs[name] != line for name, line in new_defs.items() if name in old_defs):
        return None
    removed = [name for name in old_defs if name not in new_defs]
    added = [name for name in new_defs if name not in old_defs]
    changed = {
        name for name in new_defs if name in old_defs and old_rules.get(name) != new_rules.get(name)
    }
    changed |= {name for name in damaged if name in old_defs and name in new_defs}
    stale_counters = [n for n, line in old_counters.items() if new_counters.get(n) != line]
    if stale_counters:
        # A counter is deleted and re-added only once no rule uses it: flush its chain.
        names = {f'"{n}"' for n in stale_counters}
        changed |= {
            chain
            for chain, text in old_rules.items()
            if chain in new_defs and any(n in text for n in names)
        }
    script = [f"add table {where}"]
    script += [f"flush chain {where} {name}" for name in (*sorted(changed), *removed)]
    script += [f"delete chain {where} {name}" for name in removed]
    script += [f"delete counter {where} {name}" for name in stale_counters]
    script += [new_defs[name] for name in added]
    script += [line for n, line in new_counters.items() if old_counters.get(n) != line]
    script += [new_rules[name] for name in (*added, *sorted(changed)) if name in new_rules]
    return script, {*changed, *removed, *added}


# --- all of it ---


def problems(
    snapshot: KernelSnapshot, plan: KernelPlan, expected_map: Mapping[int, bytes] | None
) -> list[str]:
    """What in `snapshot` differs from `plan`, given the tunnel map the plan needs
    (`expected_tunnel_map`; None without a VXLAN device). Empty: the kernel shows it."""
    return [
        *device_problems(snapshot.links, snapshot.offloads),
        *program_problems(snapshot.links, snapshot.filters),
        *tunnel_map_problems(snapshot.tunnel_map, expected_map),
        *nft_problems(plan, snapshot.table, snapshot.rule_counts, snapshot.links),
    ]
