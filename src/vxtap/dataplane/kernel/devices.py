"""vxtap's devices: the external VXLAN device, the veth pairs the copies cross, their
offloads; and the routes towards the mirror targets. Read with `ip -j` and `ethtool -k`,
changed with `ip link` and `ethtool -K`, all through a `Run`.

`ip -d -j link` rather than pyroute2: pyroute2 decodes every attribute of every link
in Python, which took 100 ms per link here.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping, Sequence

from vxtap.dataplane import diff
from vxtap.dataplane.kernel.shell import DataplaneError, Run, checked
from vxtap.dataplane.kernel.snapshot import NOTHING, Changed, Link, Route
from vxtap.dataplane.plan import OWN_DEVICE_PREFIX, VXLAN_DEVICE
from vxtap.model import VXLAN_PORT

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
# packet's page fragments, which the cut would have to pull into a new head again: one
# allocation instead of two, and no references to production's pages (docs/dataplane.md).
SCATTER_GATHER = ("tx-scatter-gather", "tx-scatter-gather-fraglist")
COPY_DEVICE_OFFLOADS = (*SEGMENTATION_OFFLOADS, "sg")
# GRO off on the peers, so the segmented copies are not merged again (docs/dataplane.md).
COPY_PEER_OFFLOADS = ("gro",)
# The ip_local_port_range default, if /proc cannot be read.
DEFAULT_PORT_RANGE = (32768, 60999)


def is_own_device(name: str) -> bool:
    """Devices vxtap creates; the agent never registers them as ports."""
    return name.startswith(OWN_DEVICE_PREFIX)


def read_links(run: Run) -> tuple[dict[str, Link], dict[str, int], dict[str, int]]:
    """vxtap's devices that exist, by name; and every device's MTU and ifindex."""
    out = run(["ip", "-d", "-j", "link", "show"])
    if out.returncode != 0:
        raise DataplaneError(f"ip link show: {out.stderr.strip()}")
    links: dict[str, Link] = {}
    mtus: dict[str, int] = {}
    indexes: dict[str, int] = {}
    for item in json.loads(out.stdout):
        name = item.get("ifname", "")
        if isinstance(item.get("mtu"), int):
            mtus[name] = item["mtu"]
        if isinstance(item.get("ifindex"), int):
            indexes[name] = item["ifindex"]
        if name not in diff.OWN_DEVICES:
            continue
        info = item.get("linkinfo") or {}
        data = info.get("info_data") or {}
        links[name] = Link(
            index=int(item["ifindex"]),
            kind=info.get("info_kind"),
            up="UP" in item.get("flags", []),
            peer=item.get("link"),
            external=bool(data.get("external")),
            port=data.get("port"),
            mtu=int(item.get("mtu", 0)),
        )
    return links, mtus, indexes


def read_offloads(run: Run, device: str) -> tuple[str, ...]:
    """The offloads that must be off on this copy device but are on."""
    is_peer = device in diff.COPY_PEERS
    on: list[str] = []
    for line in run(["ethtool", "-k", device]).stdout.splitlines():
        name, _, value = line.strip().partition(": ")
        if not value.startswith("on") or "[fixed]" in value:
            continue
        if is_peer and name == "generic-receive-offload":
            on.append(name)
        if not is_peer and ("segmentation" in name or name == "tx-gso-list"):
            on.append(name)
        if not is_peer and name in SCATTER_GATHER:
            on.append(name)
    return tuple(on)


def read_routes(
    run: Run, remotes: Sequence[str], mtus: Mapping[str, int], indexes: Mapping[str, int]
) -> dict[str, Route]:
    """The route towards each address: its IP MTU (the route's own `mtu`, else its
    device's, from `mtus`), device and preferred source. Addresses without a route are
    left out (nothing can be sent to them now)."""
    if not remotes:
        return {}
    script = "".join(f"route get {address}\n" for address in remotes)
    out = run(["ip", "-force", "-j", "-batch", "-"], script)
    routes: dict[str, Route] = {}
    for line in out.stdout.splitlines():
        for route in json.loads(line) if line.strip() else ():
            mtu = mtus.get(route.get("dev", ""))
            for metric in route.get("metrics") or ():
                value = metric.get("mtu") if isinstance(metric, dict) else None
                if isinstance(value, list):  # "mtu lock 1400": ["lock", 1400]
                    value = value[-1]
                if isinstance(value, int):
                    mtu = value
            if "dst" in route:
                routes[str(ipaddress.ip_address(route["dst"]))] = Route(
                    mtu,
                    # Only a unicast route's device can take the mirror directly (a
                    # target on this host stays with the VXLAN device).
                    indexes.get(route.get("dev", ""))
                    if route.get("type", "unicast") == "unicast"
                    else None,
                    route.get("prefsrc"),
                )
    found = ((a, routes.get(str(ipaddress.ip_address(a)))) for a in remotes)
    return {address: route for address, route in found if route is not None}


def read_port_range(run: Run) -> tuple[int, int]:
    """The namespace's ip_local_port_range: the VXLAN driver's outer source ports."""
    out = run(["cat", "/proc/sys/net/ipv4/ip_local_port_range"]).stdout.split()
    return (int(out[0]), int(out[1])) if len(out) == 2 else DEFAULT_PORT_RANGE


def fix(run: Run, links: Mapping[str, Link], offloads: Mapping[str, Sequence[str]]) -> Changed:
    """Create or fix vxtap's devices as `links` and `offloads` (read just before) show
    them; what it changed."""
    changed = NOTHING
    created: list[str] = []
    vx = links.get(VXLAN_DEVICE)
    if vx is not None and not diff.vxlan_ok(vx):
        checked(run, ["ip", "link", "del", "dev", VXLAN_DEVICE])
        vx = None
    if vx is None:
        kind = ("type", "vxlan", "external", "dstport", str(VXLAN_PORT), "nolearning")
        checked(run, ["ip", "link", "add", VXLAN_DEVICE, *kind])
        created.append(VXLAN_DEVICE)
    for device, peer in diff.COPY_PAIRS:
        if not diff.paired(links, device, peer):
            for name in (device, peer):
                if name in links:  # gone already when it was the other's peer
                    run(["ip", "link", "del", "dev", name])
            mtu = str(diff.COPY_DEVICE_MTU)
            checked(
                run, ["ip", "link", "add", device, "mtu", mtu, "type", "veth", "peer", "name", peer]
            )
            checked(run, ["ip", "link", "set", "dev", peer, "mtu", mtu])
            created.extend((device, peer))
    if created:
        changed |= Changed(devices=True)
    for name in created:
        # No IPv6 link-local address: no router solicitations, DAD or MLD leak into
        # the mirror stream (seen in captures before this).
        checked(run, ["ip", "link", "set", "dev", name, "addrgenmode", "none"])
    for name in diff.COPY_DEVICES:
        link = links.get(name)
        if name not in created and link is not None and link.mtu != diff.COPY_DEVICE_MTU:
            checked(run, ["ip", "link", "set", "dev", name, "mtu", str(diff.COPY_DEVICE_MTU)])
            changed |= Changed(links=True)
    for device, peer in diff.COPY_PAIRS:
        # Set on creation, and again if someone turned them back on (copies would then
        # cross whole, as one mirror per 64 KB super-packet, or cost more with sg on).
        if device in created or offloads.get(device):
            changed |= set_offloads_off(run, device, COPY_DEVICE_OFFLOADS)
        if peer in created or offloads.get(peer):
            changed |= set_offloads_off(run, peer, COPY_PEER_OFFLOADS)
    for name in (VXLAN_DEVICE, *diff.COPY_DEVICES):
        link = links.get(name)
        if name in created or link is None or not link.up:  # a new device starts down
            checked(run, ["ip", "link", "set", "dev", name, "up"])
            changed |= Changed(links=True)
    return changed


def set_offloads_off(run: Run, device: str, features: Sequence[str]) -> Changed:
    """Turn features off, then check that the kernel shows them off."""
    argv = ["ethtool", "-K", device]
    for feature in features:
        argv += [feature, "off"]
    out = run(argv)
    if out.returncode != 0:
        raise DataplaneError(f"ethtool -K {device}: {out.stderr.strip()}")
    still_on = read_offloads(run, device)
    if still_on:
        raise DataplaneError(f"{device} keeps offloads on: {', '.join(still_on)}")
    return Changed(offloads=frozenset({device}))


def delete_all(run: Run) -> None:
    """Delete every vxtap device there is (programs and the tunnel map go with them)."""
    links, _, _ = read_links(run)
    for name in links:  # a veth's peer goes with it
        out = run(["ip", "link", "del", "dev", name])
        if out.returncode != 0 and "Cannot find device" not in out.stderr:
            raise DataplaneError(f"ip link del dev {name}: {out.stderr.strip()}")
