"""Make the kernel show a `KernelPlan`, find where it differs, read counters, clean up.

Thin adapter, pyroute2 style: `apply` reads one `KernelSnapshot`, has each mechanism
"ensure" its objects exist as the plan says (creating or fixing only what differs),
then verifies the whole plan with the checks of `drift` on the snapshot with what the
apply wrote read again, and raises naming what still differs. Works in the current
network namespace, or in a named one (`netns=`), which the tests use.

Kernel objects, all named `vxtap-*` (devices) or `vxtap` (nft table), one module each:
  nft table `netdev vxtap`         `nftables`: the filters, replaced in one transaction
  vxtap-vx0                        `devices`: collect_md VXLAN device, IPv6 off
  vxtap-mk0/1, vxtap-pr0/1         `devices`: veth pairs the copies cross (offloads off)
  tc clsact + cls_bpf on *1        `programs`: the mirror program; it holds the tunnel map
Where the kernel differs from the plan is decided by the pure `vxtap.dataplane.diff`.
It does not import pyroute2, which cost the agent ~10 MiB of memory (`netlink`).
"""

from __future__ import annotations

import contextlib
import os
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from vxtap.dataplane import diff
from vxtap.dataplane.bpf import asm, syscall
from vxtap.dataplane.diff import program_name
from vxtap.dataplane.kernel import devices, nftables, probe, programs
from vxtap.dataplane.kernel.devices import is_own_device
from vxtap.dataplane.kernel.shell import DataplaneError, Run, namespace_runner
from vxtap.dataplane.kernel.snapshot import (
    NOTHING,
    Changed,
    Filter,
    Hook,
    KernelSnapshot,
    Link,
    Route,
)
from vxtap.dataplane.plan import FAMILY, TABLE, VXLAN_DEVICE, KernelPlan, parse_counter_comment

__all__ = [
    "ENCAP_IN_PROGRAM_SINCE",
    "Counters",
    "Dataplane",
    "DataplaneError",
    "PacketsBytes",
    "is_own_device",
    "kernel_release_at_least",
    "program_name",
]

# Encapsulation in the program needs bpf_skb_adjust_room's BPF_F_ADJ_ROOM_ENCAP_L2_ETH
# (Linux 5.13; bpf_redirect_neigh is 5.10): older kernels keep the VXLAN device's path.
ENCAP_IN_PROGRAM_SINCE = (5, 13)


def kernel_release_at_least(release: str, version: tuple[int, int]) -> bool:
    """`uname -r` ("6.18.44-foo") is at least major.minor."""
    numbers = [int(n) for n in re.findall(r"\d+", release)[:2]]
    return len(numbers) == 2 and (numbers[0], numbers[1]) >= version


@dataclass(frozen=True, slots=True)
class PacketsBytes:
    packets: int = 0
    bytes: int = 0

    def __add__(self, other: PacketsBytes) -> PacketsBytes:
        return PacketsBytes(self.packets + other.packets, self.bytes + other.bytes)


@dataclass(frozen=True)
class Counters:
    """From the kernel: per session, packets mirrored (copies handed to the VXLAN path,
    counted per kernel packet, i.e. before segmentation); per rule, packets the rule
    matched (accept or reject); per session, packets that could not be mirrored
    because both the mark and the priority of the production packet were in use."""

    sessions: dict[str, PacketsBytes] = field(default_factory=dict)
    rules: dict[str, PacketsBytes] = field(default_factory=dict)
    unmirrorable: dict[str, PacketsBytes] = field(default_factory=dict)
    # Per session, copies the mirror program dropped because it could not cut them to
    # the snap length (shorter than Ethernet + IPv4 header, or marked encapsulated by the
    # kernel): a copy is never sent longer than asked. From the tunnel map entries.
    uncut: dict[str, PacketsBytes] = field(default_factory=dict)
    # Sessions whose target is a group (docs/elb.md): per (session, member port), the
    # copies placed on the member; per session, those dropped for want of a healthy
    # member. From the tunnel map entries, named by the plan this object applied last.
    members: dict[tuple[str, str], PacketsBytes] = field(default_factory=dict)
    unplaced: dict[str, PacketsBytes] = field(default_factory=dict)

    def to_json(self) -> dict[str, dict[str, dict[str, int]]]:
        def dump(d: dict[str, PacketsBytes]) -> dict[str, dict[str, int]]:
            return {k: {"packets": v.packets, "bytes": v.bytes} for k, v in sorted(d.items())}

        return {"sessions": dump(self.sessions), "rules": dump(self.rules)}


# What a first read of a snapshot reads: everything.
_EVERYTHING = Changed(devices=True, links=True, tunnel_map=True, table=True, rules=None)


class Dataplane:
    def __init__(
        self, netns: str | None = None, encapsulation: str | None = None, run: Run | None = None
    ) -> None:
        """`encapsulation`: "program" (VXLAN over IPv4 written by the mirror program),
        "device" (the external VXLAN device), or None: "program" where the kernel allows
        it (docs/dataplane.md, "VXLAN in the program"). IPv6 targets always use the device.
        `run` runs ip, ethtool, tc and nft (default: a subprocess in `netns`)."""
        self.netns = netns
        self.run: Run = run if run is not None else namespace_runner(netns)
        if encapsulation is None:
            supported = kernel_release_at_least(os.uname().release, ENCAP_IN_PROGRAM_SINCE)
            encapsulation = "program" if supported else "device"
        if encapsulation not in ("program", "device"):
            raise ValueError(f"encapsulation must be program or device, not {encapsulation!r}")
        self.encapsulation = encapsulation
        self._applied: KernelPlan | None = None  # the plan this object last applied
        # The tunnel map `_expected_map` computed last, and what it was computed from:
        # an apply and its check, and every drift check of the applied plan, need the same.
        self._expected: tuple[tuple[object, ...], dict[int, bytes]] | None = None

    def missing_prerequisites(self) -> list[str]:
        """Each kernel feature or tool vxtap needs that this host lacks, by name."""
        return probe.missing_prerequisites(self.run)

    # --- reading ---

    def read(self, plan: KernelPlan) -> KernelSnapshot:
        """Everything `drift(plan)` judges, read from the kernel now."""
        return self._reread(None, _EVERYTHING, plan)

    def _reread(
        self, previous: KernelSnapshot | None, changed: Changed, plan: KernelPlan
    ) -> KernelSnapshot:
        """`previous` with what `changed` names read again (all of it without `previous`).
        The routes and the port range are read once per snapshot: vxtap's writes do not
        change them."""
        if previous is not None and changed == NOTHING:
            return previous
        # Created or deleted devices: nothing read about any device still holds.
        kept = previous if previous is not None and not changed.devices else None
        links: Mapping[str, Link]
        mtus: Mapping[str, int]
        indexes: Mapping[str, int]
        if kept is None or changed.links:
            links, mtus, indexes = devices.read_links(self.run)
        else:
            links, mtus, indexes = kept.links, kept.device_mtus, kept.device_indexes
        offloads: dict[str, tuple[str, ...]] = {}
        for name, link in links.items():
            if link.kind != "veth":
                continue
            if kept is not None and name in kept.offloads and name not in changed.offloads:
                offloads[name] = kept.offloads[name]
            else:
                offloads[name] = devices.read_offloads(self.run, name)
        filters: dict[Hook, tuple[Filter, ...]] = {}
        for device, hook, _ in diff.PROGRAMS:
            if device not in links:
                continue
            if (
                kept is not None
                and (device, hook) in kept.filters
                and ((device, hook) not in changed.filters)
            ):
                filters[device, hook] = kept.filters[device, hook]
            else:
                filters[device, hook] = programs.read_filters(self.run, device, hook)
        if kept is None or changed.filters or changed.tunnel_map:
            tunnel_map = programs.read_tunnel_map(links, filters)
        else:
            tunnel_map = kept.tunnel_map
        if previous is None or changed.table:
            table = nftables.read_table_state(self.netns)
        else:
            table = previous.table
        base_chains = diff.base_chains_present(plan, table)
        counts: dict[str, int] = {}
        if previous is not None and changed.rules is not None:
            wanted = set(base_chains) - changed.rules
            counts = {c: n for c, n in previous.rule_counts.items() if c in wanted}
        counts |= nftables.count_rules(self.netns, [c for c in base_chains if c not in counts])
        routes: Mapping[str, Route]
        if previous is None:
            remotes = sorted({t.remote for t in plan.tunnels})
            routes = devices.read_routes(self.run, remotes, mtus, indexes)
            ports = devices.read_port_range(self.run) if self.encapsulation == "program" else None
        else:
            routes, ports = previous.routes, previous.port_range
        return KernelSnapshot(
            links=links,
            device_mtus=mtus,
            device_indexes=indexes,
            offloads=offloads,
            filters=filters,
            tunnel_map=tunnel_map,
            table=table,
            rule_counts={c: counts[c] for c in base_chains},
            routes=routes,
            port_range=ports,
        )

    def _expected_map(self, plan: KernelPlan, snapshot: KernelSnapshot) -> dict[int, bytes]:
        """The tunnel map's entries for `plan` (`diff.expected_tunnel_map`), computed
        again only when the plan, the VXLAN device or the routes changed."""
        vxlan_index = snapshot.links[VXLAN_DEVICE].index
        inputs = (plan, vxlan_index, dict(snapshot.routes), snapshot.port_range)
        if self._expected is not None and self._expected[0] == inputs:
            return self._expected[1]
        entries = diff.expected_tunnel_map(plan, vxlan_index, snapshot.routes, snapshot.port_range)
        self._expected = (inputs, entries)
        return entries

    def _problems(self, plan: KernelPlan, snapshot: KernelSnapshot) -> list[str]:
        expected = self._expected_map(plan, snapshot) if VXLAN_DEVICE in snapshot.links else None
        return diff.problems(snapshot, plan, expected)

    # --- the interface ---

    def apply(self, plan: KernelPlan) -> None:
        """Make the kernel show `plan` (creating or fixing only what differs), then verify.

        The check is `drift`'s, on the snapshot the apply read with what the apply wrote
        (the writers' `Changed`) read back from the kernel: an unchanged device is not
        listed twice."""
        if plan.is_empty:
            self.cleanup()
            self._applied = None
            problems = self.drift(plan)
        else:
            problems = self._problems(plan, self._apply(plan))
        if problems:
            raise DataplaneError(
                "the kernel differs from the plan after apply: " + "; ".join(problems)
            )

    def _apply(self, plan: KernelPlan) -> KernelSnapshot:
        """All or nothing for the tunnel map and the nft table: whatever fails on the
        way, the map gets its previous entries back and nft keeps its rules (one
        transaction); a first apply that fails (nothing of vxtap's was here) removes
        what it made. Returns the snapshot as the kernel shows it afterwards."""
        entries = len(plan.tunnels) + len(plan.groups)
        entries += sum(-(-len(table) // asm.CHUNK_SLOTS) for _, table in plan.tables)
        if entries > asm.MAP_MAX_ENTRIES:
            raise DataplaneError(
                f"the plan has {entries:,} tunnel map entries (session and source pairs, "
                "group members, placement table chunks); "
                f"the tunnel map holds {asm.MAP_MAX_ENTRIES:,}"
            )
        snapshot = self.read(plan)
        fresh = not snapshot.links and snapshot.table is None  # nothing of vxtap's yet
        try:
            return self._apply_devices_map_rules(plan, snapshot)
        except BaseException:
            if fresh:
                with contextlib.suppress(Exception):  # the original error says more
                    self.cleanup()
            raise

    def _apply_devices_map_rules(
        self, plan: KernelPlan, snapshot: KernelSnapshot
    ) -> KernelSnapshot:
        changed = devices.fix(self.run, snapshot.links, snapshot.offloads)
        snapshot = self._reread(snapshot, changed, plan)
        attached = programs.fix(
            self.run, self.netns, snapshot.links, snapshot.filters, snapshot.tunnel_map
        )
        changed = attached.changed
        map_fd, current = attached.map_fd, attached.entries
        try:
            expected = self._expected_map(plan, snapshot)
            written: list[int] = []
            try:
                # New and changed entries before the rules that use them, stale ones after.
                for key in diff.differing_entries(current, expected):
                    written.append(key)
                    syscall.map_update(map_fd, key, expected[key])
                if diff.nft_problems(plan, snapshot.table, snapshot.rule_counts, snapshot.links):
                    changed |= nftables.replace_ruleset(
                        self.run,
                        plan,
                        snapshot.table,
                        diff.dup_indexes(snapshot.links),
                        self._applied,
                        snapshot.rule_counts,
                    )
            except BaseException as error:
                # nft kept the old rules (or was not reached): give them their tunnels back.
                for key in written:
                    if key in current:
                        syscall.map_update(map_fd, key, current[key])
                    else:
                        syscall.map_delete(map_fd, key)
                if isinstance(error, syscall.BpfError):
                    raise DataplaneError(
                        f"writing the tunnel map failed ({error}); its previous entries are back"
                    ) from None
                raise
            self._applied = plan
            stale = current.keys() - expected.keys()
            for key in stale:
                syscall.map_delete(map_fd, key)
            if written or stale:
                changed |= Changed(tunnel_map=True)
        finally:
            os.close(map_fd)
        return self._reread(snapshot, changed, plan)

    def drift(self, plan: KernelPlan) -> list[str]:
        """What in the kernel differs from `plan`; empty when it shows exactly the plan."""
        if plan.is_empty:
            return [f"leftover: {item}" for item in self.leftovers()]
        return self._problems(plan, self.read(plan))

    def counters(self) -> Counters:
        """Packets and bytes per session and per rule, as the kernel counted them."""
        result = Counters()
        session_of_key: dict[int, str] = {}
        for counter in nftables.read_counters(self.run):
            ref = parse_counter_comment(counter["name"], counter.get("comment", ""))
            if ref is None:
                continue
            value = PacketsBytes(counter.get("packets", 0), counter.get("bytes", 0))
            if ref.kind == "rule" and ref.rule_id is not None:
                bucket, key = result.rules, ref.rule_id
            elif ref.kind == "mirrored":
                bucket, key = result.sessions, ref.session_id
                session_of_key[int(ref.name[1:], 16)] = ref.session_id  # m<key in hex>
            else:
                bucket, key = result.unmirrorable, ref.session_id
            _add(bucket, key, value)
        applied = self._applied
        placed: dict[int, tuple[str, str]] = {}
        unplaced: dict[int, str] = {}
        if applied is not None:
            placed = {
                t.key: (t.session_id, t.member_port_id)
                for t in applied.tunnels
                if t.member_port_id is not None
            }
            unplaced = {g.key: g.session_id for g in applied.groups}
        if session_of_key or placed:
            links, _, _ = devices.read_links(self.run)
            tunnel_map = None
            for device, hook, kind in diff.PROGRAMS:  # the first mirror hook with the map
                if tunnel_map is None and device in links and kind is asm.ProgramKind.MIRROR:
                    found = {(device, hook): programs.read_filters(self.run, device, hook)}
                    tunnel_map = programs.read_tunnel_map(links, found)
            for tunnel_key, entry in (tunnel_map.entries if tunnel_map else {}).items():
                if len(entry) < asm.VALUE_SIZE:
                    continue
                placed_count = PacketsBytes(
                    *struct.unpack_from("<QQ", entry, asm.VALUE_PLACED_PACKETS)
                )
                # Summed: each source of a session on this host has its own group entry
                # and member entries.
                member = placed.get(tunnel_key)
                if member is not None:
                    _add(result.members, member, placed_count)
                elif tunnel_key in unplaced and placed_count.packets:
                    _add(result.unplaced, unplaced[tunnel_key], placed_count)
                # A group's copies are cut on the member's entry: its uncut count is the session's.
                session = session_of_key.get(tunnel_key) or (member[0] if member else None)
                if session is None:
                    continue
                uncut = PacketsBytes(*struct.unpack_from("<QQ", entry, asm.VALUE_UNCUT_PACKETS))
                if uncut.packets:
                    _add(result.uncut, session, uncut)
        return result

    def leftovers(self) -> list[str]:
        """vxtap objects present in the kernel (what an empty plan wants gone)."""
        found = []
        if nftables.table_exists(self.run):
            found.append(f"nft table {FAMILY} {TABLE}")
        links, _, _ = devices.read_links(self.run)
        found += [f"device {name}" for name in links]
        return found

    def cleanup(self) -> None:
        """Remove every trace: the table, the devices (their programs and map go with them)."""
        nftables.delete_table(self.run)
        devices.delete_all(self.run)


_Key = TypeVar("_Key")


def _add(bucket: dict[_Key, PacketsBytes], key: _Key, value: PacketsBytes) -> None:
    bucket[key] = bucket.get(key, PacketsBytes()) + value
