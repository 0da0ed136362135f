"""Make the kernel show a `KernelPlan`, find where it differs, read counters, clean up.

Thin adapter, pyroute2 style: every step "ensures" a kernel object exists as the
plan says (creating or fixing only what differs), then `apply` verifies the whole
plan with `drift` and raises naming what still differs. Works in the current
network namespace, or in a named one (`netns=`), which the tests use.

It reads and writes through iproute2, ethtool and nft, the bpf(2) syscall, and a few
hand-written netlink requests (the table's chains, a rule-count dump, a tc bpf filter
by fd); it does not import pyroute2, which cost the agent ~10 MiB of memory.

Kernel objects, all named `vxtap-*` (devices) or `vxtap` (nft table):
  nft table `netdev vxtap`         the filters, replaced in one flush + re-add transaction
  vxtap-vx0                        collect_md VXLAN device, IPv6 off
  vxtap-mk0/1, vxtap-pr0/1         veth pairs the copies cross (segmentation off on *0)
  tc clsact + cls_bpf on *1        the mirror program; it holds the tunnel map
The map is found again through the attached program (prog id -> map id), so no
bpffs pin is needed and removing the devices removes every trace.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from vxtap.dataplane.bpf import asm, syscall
from vxtap.dataplane.capabilities import own_missing_capabilities
from vxtap.dataplane.plan import (
    FAMILY,
    MARK_COPY_DEVICE,
    MARK_COPY_PEER,
    MARKER_PREFIX,
    OWN_DEVICE_PREFIX,
    PRIORITY_COPY_DEVICE,
    PRIORITY_COPY_PEER,
    TABLE,
    VXLAN_DEVICE,
    KernelPlan,
    counter_comment,
    parse_counter_comment,
    snap_length,
)
from vxtap.model import VXLAN_PORT
from vxtap.setns import enter_namespace

# nf_tables over netlink (linux/netfilter/nf_tables.h, linux/netfilter/nfnetlink.h).
NETLINK_NETFILTER = 12
NFPROTO_NETDEV = 5
# NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_*
NFT_MSG_GETTABLE, NFT_MSG_GETCHAIN, NFT_MSG_GETRULE = (10 << 8) | 1, (10 << 8) | 4, (10 << 8) | 7
NFTA_TABLE_NAME = 1
NFTA_CHAIN_TABLE, NFTA_CHAIN_NAME = 1, 3
NFTA_RULE_TABLE, NFTA_RULE_CHAIN = 1, 2
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x4, 0x300
NLM_F_REPLACE, NLM_F_CREATE = 0x100, 0x400
NLMSG_ERROR, NLMSG_DONE = 2, 3
# tc filters over rtnetlink (linux/rtnetlink.h, linux/pkt_cls.h).
RTM_NEWTFILTER = 44
TCA_KIND, TCA_OPTIONS = 1, 2
TCA_BPF_CLASSID, TCA_BPF_FD, TCA_BPF_NAME, TCA_BPF_FLAGS = 3, 6, 7, 8
TCA_BPF_FLAG_ACT_DIRECT = 1
ETH_P_ALL = 0x0003

TC_INGRESS_PARENT = 0xFFFFFFF2
TC_EGRESS_PARENT = 0xFFFFFFF3
# Offloads that let a GSO/TSO packet cross a device whole. Off on the dup targets, so
# the kernel segments each copy into wire-sized packets (docs/behaviour.md §3.2).
SEGMENTATION_OFFLOADS = (
    "tso",
    "gso",
    "tx-gre-segmentation",
    "tx-gre-csum-segmentation",
    "tx-ipxip4-segmentation",
    "tx-ipxip6-segmentation",
    "tx-udp_tnl-segmentation",
    "tx-udp_tnl-csum-segmentation",
    "tx-sctp-segmentation",
    "tx-udp-segmentation",
    "tx-gso-list",
)
# Scatter-gather off too: the kernel then segments each copy into one right-sized linear
# buffer (skb_segment copies the payload) instead of segments that reference the production
# packet's page fragments, which the cut would have to pull into a new head again. Same
# segments, one allocation instead of two, no page refcounts on production's pages:
# production TCP about +27 % with mirroring on (docs/dataplane.md, docs/benchmarks.md).
SCATTER_GATHER = ("tx-scatter-gather", "tx-scatter-gather-fraglist")
COPY_DEVICE_OFFLOADS = (*SEGMENTATION_OFFLOADS, "sg")
COPY_PAIRS = ((MARK_COPY_DEVICE, MARK_COPY_PEER), (PRIORITY_COPY_DEVICE, PRIORITY_COPY_PEER))
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


def is_own_device(name: str) -> bool:
    """Devices vxtap creates; the agent never registers them as ports."""
    return name.startswith(OWN_DEVICE_PREFIX)


def program_name(kind: asm.ProgramKind) -> str:
    """The tc filter's name: says which code it runs, so `drift` sees an outdated one."""
    return f"vxtap-{kind.value}-{asm.program_version(kind)}"


class DataplaneError(RuntimeError):
    pass


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

    def to_json(self) -> dict[str, dict[str, dict[str, int]]]:
        def dump(d: dict[str, PacketsBytes]) -> dict[str, dict[str, int]]:
            return {k: {"packets": v.packets, "bytes": v.bytes} for k, v in sorted(d.items())}

        return {"sessions": dump(self.sessions), "rules": dump(self.rules)}


@dataclass(frozen=True)
class _Link:
    index: int
    kind: str | None
    up: bool
    peer: str | None  # a veth's peer, by name
    external: bool  # VXLAN collect_md
    port: int | None  # VXLAN destination port
    mtu: int = 0


@dataclass
class _TableState:
    chains: list[str]
    markers: list[str]
    digest: str | None
    dup_indexes: tuple[int, int] | None  # of vxtap-mk0, vxtap-pr0 when the rules were loaded


T = TypeVar("T")
# What `_seen` remembers, by (kind, object): kinds are "links", "offloads" (per device),
# "filters" (per "device hook"), "nft" (the table's chains), "rules" (per chain).
_Key = tuple[str, str]


# Encapsulation in the program needs bpf_skb_adjust_room's BPF_F_ADJ_ROOM_ENCAP_L2_ETH
# (Linux 5.13; bpf_redirect_neigh is 5.10): older kernels keep the VXLAN device's path.
ENCAP_IN_PROGRAM_SINCE = (5, 13)


def kernel_release_at_least(release: str, version: tuple[int, int]) -> bool:
    """`uname -r` ("6.18.44-foo") is at least major.minor."""
    numbers = [int(n) for n in re.findall(r"\d+", release)[:2]]
    return len(numbers) == 2 and (numbers[0], numbers[1]) >= version


@dataclass(frozen=True)
class _Route:
    mtu: int | None
    device: int | None  # its ifindex (a re-created device is another route)
    source: str | None  # the route's preferred source address


class Dataplane:
    def __init__(self, netns: str | None = None, encapsulation: str | None = None) -> None:
        """`encapsulation`: "program" (VXLAN over IPv4 written by the mirror program),
        "device" (the external VXLAN device), or None: "program" where the kernel allows
        it (docs/dataplane.md, "VXLAN in the program"). IPv6 targets always use the device."""
        self.netns = netns
        if encapsulation is None:
            supported = kernel_release_at_least(os.uname().release, ENCAP_IN_PROGRAM_SINCE)
            encapsulation = "program" if supported else "device"
        if encapsulation not in ("program", "device"):
            raise ValueError(f"encapsulation must be program or device, not {encapsulation!r}")
        self.encapsulation = encapsulation
        self._applied: KernelPlan | None = None  # the plan this object last applied
        # What this object read from the kernel during the current `apply` or `drift`,
        # each item forgotten as soon as this object writes that object. The check that
        # ends an apply then re-reads only what the apply wrote (the nft table, the rules
        # of the chains it rewrote, the tunnel map) and takes the rest from the reads the
        # apply made moments before (unchanged since, as far as this process goes).
        self._seen: dict[_Key, object] | None = None
        self._expected: (
            tuple[KernelPlan, int, dict[str, _Route], tuple[int, int] | None, dict[int, bytes]]
            | None
        ) = None
        self._device_mtus: dict[str, int] = {}  # every device's MTU, from the last link dump
        self._device_indexes: dict[str, int] = {}  # and its ifindex

    # --- plumbing ---

    def _argv(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *argv] if self.netns else list(argv)

    def _run(
        self, argv: Sequence[str], stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self._argv(argv), input=stdin, capture_output=True, text=True, check=False, timeout=60
        )

    @contextlib.contextmanager
    def _observing(self) -> Iterator[None]:
        """Remember kernel reads (see `_seen`) until the outermost block ends."""
        if self._seen is not None:
            yield
            return
        self._seen = {}
        try:
            yield
        finally:
            self._seen = None

    def _remember(self, key: _Key, read: Callable[[], T]) -> T:
        if self._seen is None:
            return read()
        if key not in self._seen:
            self._seen[key] = read()
        return cast(T, self._seen[key])

    def _forget(self, *kinds: str, key: _Key | None = None) -> None:
        """Forget what was read of these kinds (or that one key): this object wrote it."""
        if self._seen is None:
            return
        if key is not None:
            self._seen.pop(key, None)
        for stale in [k for k in self._seen if k[0] in kinds]:
            del self._seen[stale]

    def _netlink(self, protocol: int) -> socket.socket:
        """A netlink socket in this object's namespace (pyroute2 is not needed for the
        few messages sent: importing it cost the agent ~10 MiB of memory)."""
        return _netlink_socket(self.netns, protocol)

    def _nft_list(self, *what: str) -> list[dict[str, Any]] | None:
        out = self._run(["nft", "-j", "list", *what])
        if out.returncode != 0:
            if "No such file or directory" in out.stderr:
                return None
            raise DataplaneError(f"nft list {' '.join(what)} failed: {out.stderr.strip()}")
        items: list[dict[str, Any]] = json.loads(out.stdout)["nftables"]
        return items

    # --- prerequisites ---

    def missing_prerequisites(self) -> list[str]:
        """Each kernel feature or tool vxtap needs that this host lacks, by name."""
        missing = own_missing_capabilities(os.geteuid())
        try:
            syscall.bpf_syscall_number(syscall.MACHINE)
        except ValueError as error:
            missing.append(str(error))
        for tool, package in (("nft", "nftables"), ("ethtool", "ethtool"), ("ip", "iproute2")):
            if shutil.which(tool) is None:
                missing.append(f"the {tool} command (package {package})")
        if missing:
            return missing
        # Built in or loaded: in /sys/module; a module `ip link add` would load: modprobe -n.
        if not os.path.exists("/sys/module/vxlan") and (
            shutil.which("modprobe") is None
            or subprocess.run(["modprobe", "-n", "vxlan"], capture_output=True).returncode != 0
        ):
            missing.append("kernel VXLAN support (CONFIG_VXLAN)")
        probe = {
            "nftables": [
                {"add": {"table": {"family": FAMILY, "name": "vxtap_probe"}}},
                {
                    "add": {
                        "chain": {
                            "family": FAMILY,
                            "table": "vxtap_probe",
                            "name": "e",
                            "type": "filter",
                            "hook": "egress",
                            "dev": "lo",
                            "prio": 0,
                            "policy": "accept",
                        }
                    }
                },
                {
                    "add": {
                        "rule": {
                            "family": FAMILY,
                            "table": "vxtap_probe",
                            "chain": "e",
                            "expr": [
                                {"mangle": {"key": {"meta": {"key": "priority"}}, "value": 1}},
                                {"dup": {"addr": "lo"}},
                            ],
                        }
                    }
                },
            ]
        }
        # --check: the kernel validates the batch, then it is aborted (nothing changes).
        out = self._run(
            ["nft", "--check", "-j", "-f", "-"], json.dumps(probe, separators=(",", ":"))
        )
        if out.returncode != 0:
            missing.append(
                "nftables netdev egress hooks with dup (CONFIG_NETFILTER_EGRESS, "
                f"CONFIG_NFT_DUP_NETDEV, nftables >= 1.0.1): {out.stderr.strip()[:300]}"
            )
        fds: list[int] = []
        try:
            fds += [syscall.create_tunnel_map()]
            fds += [syscall.create_scratch_map()]
        except OSError as error:
            missing.append(f"eBPF maps (bpf(2) BPF_MAP_CREATE: {error.strerror})")
        else:
            try:
                for kind in asm.ProgramKind:
                    os.close(syscall.load_program(asm.program(kind, *fds), "vxtap_probe"))
            except OSError as error:
                missing.append(
                    "eBPF tc programs with skb_change_tail/skb_adjust_room/skb_set_tunnel_key "
                    f"(CONFIG_NET_CLS_BPF, CONFIG_BPF_SYSCALL): {error.strerror}"
                )
        finally:
            for fd in fds:
                os.close(fd)
        return missing

    # --- devices ---

    def _links(self) -> dict[str, _Link]:
        """vxtap's devices that exist, by name. From `ip -d -j link`: pyroute2 decodes
        every attribute of every link in Python, which took 100 ms per link here."""
        return self._remember(("links", ""), self._read_links)

    def _read_links(self) -> dict[str, _Link]:
        out = self._run(["ip", "-d", "-j", "link", "show"])
        if out.returncode != 0:
            raise DataplaneError(f"ip link show: {out.stderr.strip()}")
        links: dict[str, _Link] = {}
        mtus: dict[str, int] = {}
        indexes: dict[str, int] = {}
        for item in json.loads(out.stdout):
            name = item.get("ifname", "")
            if isinstance(item.get("mtu"), int):
                mtus[name] = item["mtu"]
            if isinstance(item.get("ifindex"), int):
                indexes[name] = item["ifindex"]
            if name not in _ALL_DEVICES:
                continue
            info = item.get("linkinfo") or {}
            data = info.get("info_data") or {}
            links[name] = _Link(
                index=int(item["ifindex"]),
                kind=info.get("info_kind"),
                up="UP" in item.get("flags", []),
                peer=item.get("link"),
                external=bool(data.get("external")),
                port=data.get("port"),
                mtu=int(item.get("mtu", 0)),
            )
        self._device_mtus = mtus
        self._device_indexes = indexes
        return links

    @staticmethod
    def _vxlan_ok(link: _Link) -> bool:
        return link.kind == "vxlan" and link.external and link.port == VXLAN_PORT

    def _device_problems(self, links: dict[str, _Link]) -> list[str]:
        problems: list[str] = []
        vx = links.get(VXLAN_DEVICE)
        if vx is None:
            problems.append(f"device {VXLAN_DEVICE} is missing")
        elif not self._vxlan_ok(vx):
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
        for name in (VXLAN_DEVICE, *(d for pair in COPY_PAIRS for d in pair[:2])):
            link = links.get(name)
            if link is not None and not link.up:
                problems.append(f"device {name} is down")
            if link is not None and link.kind == "veth":
                on = self._offloads_on(name)
                if on:
                    problems.append(f"device {name} has offloads on: {', '.join(on)}")
        return problems

    def _ensure_devices(self) -> dict[str, _Link]:
        """Create or fix vxtap's devices; returns the links as they are afterwards."""
        links = self._links()
        created: list[str] = []
        vx = links.get(VXLAN_DEVICE)
        if vx is not None and not self._vxlan_ok(vx):
            self._forget("links", "offloads", "filters")
            self._ip(["link", "del", "dev", VXLAN_DEVICE])
            vx = None
        if vx is None:
            self._forget("links", "offloads", "filters")
            kind = ("type", "vxlan", "external", "dstport", str(VXLAN_PORT), "nolearning")
            self._ip(["link", "add", VXLAN_DEVICE, *kind])
            created.append(VXLAN_DEVICE)
        for device, peer in COPY_PAIRS:
            a, b = links.get(device), links.get(peer)
            paired = a is not None and b is not None and a.kind == "veth" and a.peer == peer
            if not paired:
                self._forget("links", "offloads", "filters")
                for name in (device, peer):
                    if name in links:  # gone already when it was the other's peer
                        self._run(["ip", "link", "del", "dev", name])
                mtu = str(COPY_DEVICE_MTU)
                self._ip(["link", "add", device, "mtu", mtu, "type", "veth", "peer", "name", peer])
                self._ip(["link", "set", "dev", peer, "mtu", mtu])
                created.extend((device, peer))
        for name in created:
            # No IPv6 link-local address: no router solicitations, DAD or MLD leak into
            # the mirror stream (seen in captures before this).
            self._ip(["link", "set", "dev", name, "addrgenmode", "none"])
            self._forget("links")
        for name in (d for pair in COPY_PAIRS for d in pair):
            link = links.get(name)
            if name not in created and link is not None and link.mtu != COPY_DEVICE_MTU:
                self._forget("links")
                self._ip(["link", "set", "dev", name, "mtu", str(COPY_DEVICE_MTU)])
        for device, peer in COPY_PAIRS:
            # Set on creation, and again if someone turned them back on (copies would then
            # cross whole, as one mirror per 64 KB super-packet, or cost more with sg on).
            if device in created or self._offloads_on(device):
                self._ethtool(device, COPY_DEVICE_OFFLOADS)
            if peer in created or self._offloads_on(peer):
                self._ethtool(peer, ("gro",))
        if created:
            links = self._links()
        raised = False
        for name in (VXLAN_DEVICE, *(d for pair in COPY_PAIRS for d in pair[:2])):
            if not links[name].up:
                self._forget("links")
                self._ip(["link", "set", "dev", name, "up"])
                raised = True
        # A link dump costs more than all the rest of an unchanged apply: only when needed.
        return self._links() if raised else links

    def _ip(self, argv: Sequence[str]) -> None:
        out = self._run(["ip", *argv])
        if out.returncode != 0:
            raise DataplaneError(f"ip {' '.join(argv)}: {out.stderr.strip()}")

    def _ethtool(self, device: str, features: Sequence[str]) -> None:
        """Turn features off, then check that the kernel shows them off."""
        argv = ["ethtool", "-K", device]
        for feature in features:
            argv += [feature, "off"]
        self._forget(key=("offloads", device))
        out = self._run(argv)
        if out.returncode != 0:
            raise DataplaneError(f"ethtool -K {device}: {out.stderr.strip()}")
        still_on = self._offloads_on(device)
        if still_on:
            raise DataplaneError(f"{device} keeps offloads on: {', '.join(still_on)}")

    def _offloads_on(self, device: str) -> list[str]:
        """The offloads that must be off on this device but are on."""
        return self._remember(("offloads", device), lambda: self._read_offloads(device))

    def _read_offloads(self, device: str) -> list[str]:
        is_peer = device in _PEERS
        on: list[str] = []
        for line in self._run(["ethtool", "-k", device]).stdout.splitlines():
            name, _, value = line.strip().partition(": ")
            if not value.startswith("on") or "[fixed]" in value:
                continue
            if is_peer and name == "generic-receive-offload":
                on.append(name)
            if not is_peer and ("segmentation" in name or name == "tx-gso-list"):
                on.append(name)
            if not is_peer and name in SCATTER_GATHER:
                on.append(name)
        return on

    # --- programs and the tunnel map ---

    def _filters(self, device: str, hook: str) -> list[tuple[str, int]]:
        """(name, prog id) of the bpf filters at a device's tc ingress or egress.

        From `tc -j`: pyroute2 0.9.7 does not decode TCA_BPF_ID."""
        return self._remember(
            ("filters", f"{device} {hook}"), lambda: self._read_filters(device, hook)
        )

    def _read_filters(self, device: str, hook: str) -> list[tuple[str, int]]:
        out = self._run(["tc", "-j", "filter", "show", "dev", device, hook])
        if out.returncode != 0 or not out.stdout.strip():
            return []
        found: list[tuple[str, int]] = []
        for f in json.loads(out.stdout):
            options = f.get("options") or {}
            prog = options.get("prog") or {}
            if f.get("kind") == "bpf" and "id" in prog:
                found.append((options.get("bpf_name", ""), int(prog["id"])))
        return found

    def _program_problems(self, links: dict[str, _Link]) -> list[str]:
        problems: list[str] = []
        for device, hook, kind in PROGRAMS:
            if device not in links:
                continue
            names = [name for name, _ in self._filters(device, hook)]
            wanted = program_name(kind)
            if names != [wanted]:
                problems.append(
                    f"tc {hook} of {device} has {names or 'no programs'}, not [{wanted}]"
                )
        return problems

    def _current_map_fd(self, links: dict[str, _Link]) -> int | None:
        """The tunnel map the attached programs use (an fd the caller closes), if any."""
        for device, hook, kind in PROGRAMS:
            if device not in links or kind is not asm.ProgramKind.MIRROR:
                continue
            for name, prog_id in self._filters(device, hook):
                if not name.startswith("vxtap-"):
                    continue
                try:
                    prog_fd = syscall.prog_fd_by_id(prog_id)
                except OSError:
                    continue
                try:
                    map_ids = syscall.prog_map_ids(prog_fd)
                finally:
                    os.close(prog_fd)
                if map_ids:
                    return syscall.map_fd_by_id(map_ids[0])
        return None

    def _ensure_programs(self, links: dict[str, _Link]) -> int:
        """Attach each program where it belongs; returns the tunnel map's fd."""
        map_fd = self._current_map_fd(links)
        if map_fd is not None and syscall.map_value_size(map_fd) != asm.VALUE_SIZE:
            os.close(map_fd)  # an older agent's map: its programs are replaced below
            map_fd = None
        if map_fd is None:
            map_fd = syscall.create_tunnel_map()
        for device, hook, kind in PROGRAMS:
            index = links[device].index
            wanted = program_name(kind)
            filters = self._filters(device, hook)
            if [name for name, _ in filters] == [wanted]:
                continue
            parent = TC_INGRESS_PARENT if hook == "ingress" else TC_EGRESS_PARENT
            self._forget(key=("filters", f"{device} {hook}"))
            self._run(["tc", "qdisc", "add", "dev", device, "clsact"])  # fails when present
            if len(filters) > 1 or any(not name.startswith("vxtap-") for name, _ in filters):
                self._tc(["filter", "del", "dev", device, hook])
            scratch_fd = syscall.create_scratch_map()  # the program holds it; no one else needs it
            try:
                code = asm.program(kind, map_fd, scratch_fd)
                prog_fd = syscall.load_program(code, f"vxtap_{kind.value}")
            finally:
                os.close(scratch_fd)
            try:
                # Replaced in place (same preference and handle): an upgraded program
                # takes over without a moment with no program.
                self._replace_bpf_filter(index, parent, prog_fd, wanted)
            except OSError as error:
                raise DataplaneError(
                    f"attaching program {wanted} at tc {hook} of {device}: {error.strerror}"
                ) from None
            finally:
                os.close(prog_fd)
        return map_fd

    def _tc(self, argv: Sequence[str]) -> None:
        out = self._run(["tc", *argv])
        if out.returncode != 0:
            raise DataplaneError(f"tc {' '.join(argv)}: {out.stderr.strip()}")

    def _replace_bpf_filter(self, index: int, parent: int, prog_fd: int, name: str) -> None:
        """`tc filter replace dev .. pref 1 handle 1 bpf da classid 1 fd PROG name NAME`:
        tc(8) cannot attach a program by file descriptor, so one RTM_NEWTFILTER is sent."""
        options = (
            _nlattr_u32(TCA_BPF_CLASSID, 1)
            + _nlattr_u32(TCA_BPF_FD, prog_fd)
            + _nlattr(TCA_BPF_NAME, name)
            + _nlattr_u32(TCA_BPF_FLAGS, TCA_BPF_FLAG_ACT_DIRECT)
        )
        info = (1 << 16) | socket.htons(ETH_P_ALL)  # preference 1, every protocol
        body = struct.pack("=BBHiIII", socket.AF_UNSPEC, 0, 0, index, 1, parent, info)
        body += _nlattr(TCA_KIND, "bpf") + _nlattr_raw(TCA_OPTIONS, options)
        flags = NLM_F_ACK | NLM_F_REPLACE | NLM_F_CREATE
        with contextlib.closing(self._netlink(socket.NETLINK_ROUTE)) as sock:
            _netlink_request(sock, 1, RTM_NEWTFILTER, flags, body)

    def _expected_map(self, plan: KernelPlan, vxlan_index: int) -> dict[int, bytes]:
        """The tunnel map's entries for `plan` (kept for the plan last asked about: an
        apply and its check, and every drift check of the applied plan, need the same).

        Each snap length is clamped to what fits the MTU of the route to its target now
        (docs/dataplane.md, "Truncation"): a changed MTU shows as drift and is applied."""
        routes = self._path_routes(sorted({t.remote for t in plan.tunnels}))
        ports = self._port_range() if self.encapsulation == "program" else None
        if self._expected is not None:
            last_plan, last_index, last_routes, last_ports, entries = self._expected
            if (last_plan, last_index, last_routes, last_ports) == (
                plan,
                vxlan_index,
                routes,
                ports,
            ):
                return entries
        entries = {}
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
        self._expected = (plan, vxlan_index, routes, ports, entries)
        return entries

    def _port_range(self) -> tuple[int, int]:
        """The namespace's ip_local_port_range: the VXLAN driver's outer source ports."""

        def read() -> tuple[int, int]:
            out = self._run(["cat", "/proc/sys/net/ipv4/ip_local_port_range"]).stdout.split()
            return (int(out[0]), int(out[1])) if len(out) == 2 else (32768, 60999)

        return self._remember(("ports", ""), read)

    def _path_routes(self, remotes: Sequence[str]) -> dict[str, _Route]:
        """The route towards each address: its IP MTU (the route's own `mtu`, else its
        device's), device and preferred source. Addresses without a route are left out
        (nothing can be sent to them now)."""
        return self._remember(("routes", " ".join(remotes)), lambda: self._read_routes(remotes))

    def _read_routes(self, remotes: Sequence[str]) -> dict[str, _Route]:
        if not remotes:
            return {}
        self._links()  # the device MTUs, from a dump this apply or drift makes anyway
        script = "".join(f"route get {address}\n" for address in remotes)
        out = self._run(["ip", "-force", "-j", "-batch", "-"], script)
        routes: dict[str, _Route] = {}
        for line in out.stdout.splitlines():
            for route in json.loads(line) if line.strip() else ():
                mtu = self._device_mtus.get(route.get("dev", ""))
                for metric in route.get("metrics") or ():
                    value = metric.get("mtu") if isinstance(metric, dict) else None
                    if isinstance(value, list):  # "mtu lock 1400": ["lock", 1400]
                        value = value[-1]
                    if isinstance(value, int):
                        mtu = value
                if "dst" in route:
                    routes[str(ipaddress.ip_address(route["dst"]))] = _Route(
                        mtu,
                        # Only a unicast route's device can take the mirror directly (a
                        # target on this host stays with the VXLAN device).
                        self._device_indexes.get(route.get("dev", ""))
                        if route.get("type", "unicast") == "unicast"
                        else None,
                        route.get("prefsrc"),
                    )
        found = ((a, routes.get(str(ipaddress.ip_address(a)))) for a in remotes)
        return {address: route for address, route in found if route is not None}

    # --- nft ---

    def _table_state(self) -> _TableState | None:
        """What the table holds, from one cheap listing of chain names (listing 10,000
        rules takes about a second): the chains, and from the marker chain's name the
        plan digest and the ifindexes its `dup` rules were bound to."""
        return self._remember(("nft", ""), self._read_table_state)

    def _read_table_state(self) -> _TableState | None:
        """The table's chain names, over netlink: the table (ENOENT: absent), then a dump
        of the family's chains. Hand-written for the reasons of `_rule_counts`; an
        `nft list chains` process took ~30 ms at 3,000 chains, twice per apply."""
        with contextlib.closing(self._netlink(NETLINK_NETFILTER)) as sock:
            try:
                _nft_request(sock, 1, NFT_MSG_GETTABLE, 0, _nlattr(NFTA_TABLE_NAME, TABLE))
                replies = _nft_request(
                    sock, 2, NFT_MSG_GETCHAIN, NLM_F_DUMP, _nlattr(NFTA_CHAIN_TABLE, TABLE)
                )
            except OSError as error:
                if error.errno == errno.ENOENT:
                    return None
                raise DataplaneError(f"listing the chains of nft table {TABLE}: {error}") from None
        chains = _chain_names(replies, TABLE)
        digest: str | None = None
        dup_indexes: tuple[int, int] | None = None
        for name in chains:
            if name.startswith(MARKER_PREFIX):
                digest, mark_index, priority_index = name.removeprefix(MARKER_PREFIX).split("_")
                dup_indexes = (int(mark_index), int(priority_index))
        markers = [c for c in chains if c.startswith(MARKER_PREFIX)]
        plain = [c for c in chains if not c.startswith(MARKER_PREFIX)]
        return _TableState(plain, markers, digest, dup_indexes)

    def _rule_counts(self, chains: Sequence[str]) -> dict[str, int]:
        """How many rules each named chain of the table holds (missing chains: 0).

        One netlink socket, one rule dump per chain that the kernel filters by chain, and
        only the replies counted, not decoded. Hand-written because nft 1.0.6 refuses a
        second `list chain` in one batch ("No such file or directory"), one nft process
        per chain costs milliseconds each with hundreds of devices, and pyroute2 decodes
        every expression of every rule in Python."""
        if self._seen is None:
            return self._count_rules(chains)
        seen = self._seen
        unknown = [c for c in chains if ("rules", c) not in seen]
        seen.update({("rules", c): n for c, n in self._count_rules(unknown).items()})
        return {c: cast(int, seen[("rules", c)]) for c in chains}

    def _count_rules(self, chains: Sequence[str]) -> dict[str, int]:
        counts = dict.fromkeys(chains, 0)
        if not counts:
            return counts
        with contextlib.closing(self._netlink(NETLINK_NETFILTER)) as sock:
            for seq, chain in enumerate(counts, start=1):
                attrs = _nlattr(NFTA_RULE_TABLE, TABLE) + _nlattr(NFTA_RULE_CHAIN, chain)
                try:
                    counts[chain] = len(_nft_request(sock, seq, NFT_MSG_GETRULE, NLM_F_DUMP, attrs))
                except OSError as error:
                    if error.errno != errno.ENOENT:  # ENOENT: no such chain, 0 rules
                        raise DataplaneError(
                            f"listing the rules of nft chain {chain}: {error.strerror}"
                        ) from None
        return counts

    def _damaged_chains(self, plan: KernelPlan, state: _TableState | None) -> list[str]:
        """The plan's base chains that exist but hold another number of rules than the
        plan says (e.g. flushed by hand). Base chains only: they are a few per device,
        while listing every chain's rules takes about a second at 10,000 rules."""
        if state is None:
            return []
        present = set(state.chains)
        wanted = {c.name: c.rules for c in plan.chains if c.hook is not None}
        counts = self._rule_counts([name for name in wanted if name in present])
        return [name for name, count in counts.items() if count != wanted[name]]

    def _kernel_counters(self, state: _TableState) -> dict[str, str]:
        """Counter name -> comment. From the plan applied last when the kernel still holds
        it (no listing needed), else listed."""
        if self._applied is not None and state.digest == self._applied.digest:
            return {c.name: counter_comment(c) for c in self._applied.counters}
        items = self._nft_list("counters", "table", FAMILY, TABLE) or []
        return {
            i["counter"]["name"]: i["counter"].get("comment", "") for i in items if "counter" in i
        }

    @staticmethod
    def _dup_indexes(links: dict[str, _Link]) -> tuple[int, int]:
        mark, priority = (
            links[name].index if name in links else 0
            for name in (MARK_COPY_DEVICE, PRIORITY_COPY_DEVICE)
        )
        return mark, priority

    def _nft_problems(
        self, plan: KernelPlan, state: _TableState | None, links: dict[str, _Link]
    ) -> list[str]:
        if state is None:
            return [f"nft table {FAMILY} {TABLE} is missing"]
        problems: list[str] = []
        if state.digest != plan.digest:
            problems.append(f"nft table holds plan {state.digest}, not {plan.digest}")
        present = set(state.chains)
        missing = [c.name for c in plan.chains if c.name not in present]
        problems.extend(f"nft chain {name} is missing" for name in missing[:5])
        if len(missing) > 5:
            problems.append(f"... {len(missing) - 5} more nft chains are missing")
        wanted = {c.name for c in plan.chains}
        problems.extend(f"nft chain {name} is not in the plan" for name in present - wanted)
        problems.extend(
            f"nft base chain {name} does not hold the plan's rules"
            for name in self._damaged_chains(plan, state)
        )
        if state.dup_indexes != self._dup_indexes(links):
            # `dup to` binds an ifindex: a re-created copy device leaves the rules stale.
            problems.append(
                f"nft rules are stale: their dup targets had ifindex {state.dup_indexes}"
            )
        return problems

    def _replace_ruleset(
        self, plan: KernelPlan, state: _TableState | None, links: dict[str, _Link]
    ) -> None:
        """One nft transaction that makes the table hold `plan` (docs/behaviour.md §5.4: no gap, no
        duplicate; a delete-and-recreate of the table duplicated mirrors).

        When the table holds exactly the plan this object applied last, only the chains
        and counters that differ are flushed and re-added (a one-session change among
        1,000 then costs a few rules, not 10,000); otherwise the whole table is
        flushed and re-added."""
        where = f"{FAMILY} {TABLE}"
        mark_index, priority_index = self._dup_indexes(links)
        old = self._applied
        script: list[str] | None = None
        rewritten: set[str] | None = None  # the chains whose rules the script sets; None: all
        if (
            state is not None
            and old is not None
            and state.digest == old.digest
            and state.dup_indexes == (mark_index, priority_index)
            and set(state.chains) == {c.name for c in old.chains}
        ):
            incremental = _incremental(old, plan, where, self._damaged_chains(plan, state))
            if incremental is not None:
                script, rewritten = incremental
        if script is None:
            script = [f"add table {where}", f"flush table {where}"]
            if state is not None:
                wanted_chains = {c.name for c in plan.chains}
                script += [
                    f"delete chain {where} {name}"
                    for name in state.chains
                    if name not in wanted_chains
                ]
                # Counters keep their totals across re-applies; one whose meaning changed
                # (another rule id) or that the plan drops is deleted (re-added from zero).
                wanted = {c.name: counter_comment(c) for c in plan.counters}
                script += [
                    f"delete counter {where} {name}"
                    for name, comment in sorted(self._kernel_counters(state).items())
                    if wanted.get(name) != comment
                ]
            script.append(plan.nft_text)
        if state is not None:
            script += [f"delete chain {where} {name}" for name in state.markers]
        script.append(
            f"add chain {where} {MARKER_PREFIX}{plan.digest}_{mark_index}_{priority_index}"
        )
        self._forget("nft", *(() if rewritten is not None else ("rules",)))
        for name in rewritten or ():
            self._forget(key=("rules", name))
        out = self._run(["nft", "-f", "-"], "\n".join(script) + "\n")
        if out.returncode != 0:
            raise DataplaneError(f"nft refused the ruleset: {out.stderr.strip()[:2000]}")

    # --- the interface ---

    def apply(self, plan: KernelPlan) -> None:
        """Make the kernel show `plan` (creating or fixing only what differs), then verify.

        The check is `drift`'s, on what the apply wrote read back from the kernel, and on
        the rest as the apply read it (`_seen`): an unchanged device is not listed twice."""
        with self._observing():
            self._apply(plan)
            problems = self.drift(plan)
        if problems:
            raise DataplaneError(
                "the kernel differs from the plan after apply: " + "; ".join(problems)
            )

    def _apply(self, plan: KernelPlan) -> None:
        """All or nothing for the tunnel map and the nft table: whatever fails on the
        way, the map gets its previous entries back and nft keeps its rules (one
        transaction); a first apply that fails (nothing of vxtap's was here) removes
        what it made."""
        if plan.is_empty:
            self.cleanup()
            self._applied = None
            return
        if len(plan.tunnels) > asm.MAP_MAX_ENTRIES:
            raise DataplaneError(
                f"the plan has {len(plan.tunnels):,} (session, source) pairs; "
                f"the tunnel map holds {asm.MAP_MAX_ENTRIES:,}"
            )
        fresh = not self._links() and self._table_state() is None  # nothing of vxtap's yet
        try:
            self._apply_devices_map_rules(plan)
        except BaseException:
            if fresh:
                with contextlib.suppress(Exception):  # the original error says more
                    self.cleanup()
            raise

    def _apply_devices_map_rules(self, plan: KernelPlan) -> None:
        links = self._ensure_devices()
        map_fd = self._ensure_programs(links)
        try:
            expected = self._expected_map(plan, links[VXLAN_DEVICE].index)
            current = dict(syscall.map_items(map_fd))
            written: list[int] = []
            try:
                # New and changed entries before the rules that use them, stale ones after.
                for key, value in expected.items():
                    if _settings(current.get(key)) != _settings(value):
                        written.append(key)
                        syscall.map_update(map_fd, key, value)
                state = self._table_state()
                if self._nft_problems(plan, state, links):
                    self._replace_ruleset(plan, state, links)
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
            for key in current.keys() - expected.keys():
                syscall.map_delete(map_fd, key)
        finally:
            os.close(map_fd)

    def drift(self, plan: KernelPlan) -> list[str]:
        """What in the kernel differs from `plan`; empty when it shows exactly the plan."""
        with self._observing():
            return self._drift(plan)

    def _drift(self, plan: KernelPlan) -> list[str]:
        if plan.is_empty:
            return [f"leftover: {item}" for item in self.leftovers()]
        links = self._links()
        problems = self._device_problems(links)
        problems += self._program_problems(links)
        map_fd = self._current_map_fd(links)
        if map_fd is None:
            problems.append("the tunnel map is missing")
        elif VXLAN_DEVICE in links:
            try:
                current = dict(syscall.map_items(map_fd))
            finally:
                os.close(map_fd)
            expected = self._expected_map(plan, links[VXLAN_DEVICE].index)
            missing = [k for k, v in expected.items() if _settings(current.get(k)) != _settings(v)]
            extra = current.keys() - expected.keys()
            if missing:
                problems.append(f"{len(missing)} tunnel map entries are missing or differ")
            if extra:
                problems.append(f"{len(extra)} tunnel map entries are not in the plan")
        else:
            os.close(map_fd)
        return problems + self._nft_problems(plan, self._table_state(), links)

    def counters(self) -> Counters:
        """Packets and bytes per session and per rule, as the kernel counted them."""
        items = self._nft_list("counters", "table", FAMILY, TABLE) or []
        result = Counters()
        session_of_key: dict[int, str] = {}
        for item in items:
            counter = item.get("counter")
            if counter is None:
                continue
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
            bucket[key] = bucket.get(key, PacketsBytes()) + value
        if session_of_key:
            map_fd = self._current_map_fd(self._links())
            if map_fd is not None:
                try:
                    for tunnel_key, entry in syscall.map_items(map_fd):
                        session = session_of_key.get(tunnel_key)
                        if session is None or len(entry) < asm.VALUE_SIZE:
                            continue
                        packets, octets = struct.unpack_from("<QQ", entry, asm.VALUE_UNCUT_PACKETS)
                        if packets:
                            total = result.uncut.get(session, PacketsBytes())
                            result.uncut[session] = total + PacketsBytes(packets, octets)
                finally:
                    os.close(map_fd)
        return result

    def leftovers(self) -> list[str]:
        """vxtap objects present in the kernel (what an empty plan wants gone)."""
        found = []
        if self._nft_list("table", FAMILY, TABLE) is not None:
            found.append(f"nft table {FAMILY} {TABLE}")
        found += [f"device {name}" for name in self._links()]
        return found

    def cleanup(self) -> None:
        """Remove every trace: the table, the devices (their programs and map go with them)."""
        self._forget("links", "offloads", "filters", "nft", "rules")
        out = self._run(["nft", "delete", "table", FAMILY, TABLE])
        if out.returncode != 0 and "No such file or directory" not in out.stderr:
            raise DataplaneError(f"nft delete table {FAMILY} {TABLE}: {out.stderr.strip()}")
        for name in self._read_links():  # a veth's peer goes with it
            out = self._run(["ip", "link", "del", "dev", name])
            if out.returncode != 0 and "Cannot find device" not in out.stderr:
                raise DataplaneError(f"ip link del dev {name}: {out.stderr.strip()}")


def _settings(value: bytes | None) -> bytes | None:
    """A tunnel map value without the counters the program keeps in it."""
    return None if value is None else value[: asm.VALUE_SETTINGS_SIZE]


_PEERS = (MARK_COPY_PEER, PRIORITY_COPY_PEER)
_ALL_DEVICES = frozenset((VXLAN_DEVICE, MARK_COPY_DEVICE, PRIORITY_COPY_DEVICE, *_PEERS))


def _nlattr(kind: int, value: str) -> bytes:
    """A netlink string attribute, NUL-terminated and padded to 4 bytes."""
    return _nlattr_raw(kind, value.encode() + b"\0")


def _nlattr_u32(kind: int, value: int) -> bytes:
    return _nlattr_raw(kind, struct.pack("=I", value))


def _nlattr_raw(kind: int, data: bytes) -> bytes:
    attr = struct.pack("=HH", 4 + len(data), kind) + data
    return attr + b"\0" * (-len(attr) % 4)


def _chain_names(replies: Sequence[bytes], table: str) -> list[str]:
    """The names of `table`'s chains among NFT_MSG_NEWCHAIN replies. Reads each reply's
    attributes only up to the name (the table and handle come first): a dump holds
    thousands of chains, and each has about ten attributes."""
    wanted = table.encode() + b"\0"
    unpack = struct.Struct("=HH").unpack_from
    names: list[str] = []
    for reply in replies:
        offset, in_table = 0, False
        while offset + 4 <= len(reply):
            length, kind = unpack(reply, offset)
            if length < 4:
                break
            kind &= 0x3FFF  # without the nested and byte-order flags
            if kind == NFTA_CHAIN_TABLE:
                in_table = reply[offset + 4 : offset + length] == wanted
            elif kind == NFTA_CHAIN_NAME:
                if in_table:
                    names.append(reply[offset + 4 : offset + length].rstrip(b"\0").decode())
                break
            offset += (length + 3) & ~3
    return names


def _netlink_request(
    sock: socket.socket, seq: int, kind: int, flags: int, body: bytes
) -> list[bytes]:
    """Send one request and return its replies' payloads (after the netlink header): a
    get's one reply, a dump's (NLM_F_DUMP) up to NLMSG_DONE, none for an acknowledged
    change (NLM_F_ACK). OSError when the kernel refuses it."""
    sock.send(struct.pack("=IHHII", 16 + len(body), kind, NLM_F_REQUEST | flags, seq, 0) + body)
    replies: list[bytes] = []
    while True:
        data = sock.recv(1 << 20)
        offset = 0
        while offset + 16 <= len(data):
            length, reply, _, reply_seq, _ = struct.unpack_from("=IHHII", data, offset)
            if reply_seq == seq:
                if reply == NLMSG_DONE:
                    return replies
                if reply == NLMSG_ERROR:
                    (code,) = struct.unpack_from("=i", data, offset + 16)
                    if code:
                        raise OSError(-code, os.strerror(-code))
                    return replies
                replies.append(data[offset + 16 : offset + length])
                if not flags & (NLM_F_DUMP | NLM_F_ACK):
                    return replies
            offset += (length + 3) & ~3


def _nft_request(sock: socket.socket, seq: int, kind: int, flags: int, attrs: bytes) -> list[bytes]:
    """An nf_tables request in the netdev family; the replies' attributes."""
    nfgenmsg = struct.pack("=BBH", NFPROTO_NETDEV, 0, 0)
    return [r[4:] for r in _netlink_request(sock, seq, kind, flags, nfgenmsg + attrs)]


def _netlink_socket(netns: str | None, protocol: int) -> socket.socket:
    """A bound netlink socket in namespace `netns` (None: the current one), with a 10 s
    timeout. A socket stays in the namespace it was created in, so it is created on a
    short-lived thread that enters the namespace (setns(2) moves only that thread)."""

    def create() -> socket.socket:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, protocol)
        sock.settimeout(10)
        sock.bind((0, 0))
        return sock

    if netns is None:
        return create()
    made: list[socket.socket] = []
    failed: list[OSError] = []

    def in_namespace() -> None:
        try:
            enter_namespace(netns)
            made.append(create())
        except OSError as error:
            failed.append(error)

    thread = threading.Thread(target=in_namespace, name=f"netns-{netns}")
    thread.start()
    thread.join()
    if failed:
        raise DataplaneError(f"netlink socket in namespace {netns}: {failed[0]}")
    return made[0]


def _incremental(
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
