"""What one `apply` or `drift` read of vxtap's kernel objects, and what a write changed.

A `KernelSnapshot` holds plain values. `Dataplane` reads one per `apply` or `drift`;
every writer (`devices.fix`, `programs.fix`, `nftables.replace_ruleset`, the tunnel map
writes) returns a `Changed` naming what it wrote, and the snapshot that the closing
check of an apply judges is the previous one with exactly those parts read again. An
unchanged device is thus listed once per apply, and a write cannot be verified against
a read made before it, as long as the writer says what it wrote (its return value).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Link:
    """One of vxtap's devices, from `ip -d -j link show`."""

    index: int
    kind: str | None
    up: bool
    peer: str | None  # a veth's peer, by name
    external: bool  # VXLAN collect_md
    port: int | None  # VXLAN destination port
    mtu: int = 0


@dataclass(frozen=True)
class Route:
    """The route towards a mirror target."""

    mtu: int | None
    device: int | None  # its ifindex (a re-created device is another route)
    source: str | None  # the route's preferred source address


@dataclass(frozen=True)
class TableState:
    """What the nft table holds, from its chain names alone."""

    chains: tuple[str, ...]  # without the marker chain
    markers: tuple[str, ...]
    digest: str | None  # the plan digest in the marker chain's name
    dup_indexes: tuple[int, int] | None  # of vxtap-mk0, vxtap-pr0 when the rules were loaded


@dataclass(frozen=True)
class TunnelMap:
    """The tunnel map the attached mirror programs use."""

    map_id: int
    value_size: int
    entries: Mapping[int, bytes]


# A tc hook: (device, "ingress" or "egress"); a bpf filter there: (name, program id).
Hook = tuple[str, str]
Filter = tuple[str, int]


@dataclass(frozen=True)
class KernelSnapshot:
    links: Mapping[str, Link]  # vxtap's devices that exist, by name
    device_mtus: Mapping[str, int]  # every device's MTU (the routes' fallback MTU)
    device_indexes: Mapping[str, int]  # every device's ifindex
    offloads: Mapping[str, tuple[str, ...]]  # per veth: offloads on that must be off
    filters: Mapping[Hook, tuple[Filter, ...]]  # the program hooks of devices that exist
    tunnel_map: TunnelMap | None
    table: TableState | None  # None: no table
    rule_counts: Mapping[str, int]  # the plan's base chains that exist: their rule count
    routes: Mapping[str, Route]  # towards the plan's targets that have a route
    port_range: tuple[int, int] | None  # ip_local_port_range, when the program encapsulates


@dataclass(frozen=True)
class Changed:
    """What a write changed in the kernel, so the snapshot reads exactly that again."""

    devices: bool = False  # created or deleted: everything read about devices is stale
    links: bool = False  # a device's state or MTU
    offloads: frozenset[str] = frozenset()
    filters: frozenset[Hook] = frozenset()
    tunnel_map: bool = False
    table: bool = False
    rules: frozenset[str] | None = frozenset()  # chains whose rules changed; None: all

    def __or__(self, other: Changed) -> Changed:
        rules = None if self.rules is None or other.rules is None else self.rules | other.rules
        return Changed(
            devices=self.devices or other.devices,
            links=self.links or other.links,
            offloads=self.offloads | other.offloads,
            filters=self.filters | other.filters,
            tunnel_map=self.tunnel_map or other.tunnel_map,
            table=self.table or other.table,
            rules=rules,
        )


NOTHING = Changed()
