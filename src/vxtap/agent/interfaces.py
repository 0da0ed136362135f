"""Which of the host's network interfaces the agent registers as ports.

`select_interfaces` is pure (netlink messages in, values out); `discover` is
the thin pyroute2 adapter that reads the current namespace.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pyroute2 import IPRoute

from vxtap.client import Interface

AF_INET, AF_INET6 = 2, 10


def select_interfaces(
    links: Iterable[Mapping[str, Any]],
    addresses: Iterable[Mapping[str, Any]],
    is_own_device: Callable[[str], bool],
) -> tuple[Interface, ...]:
    """The interfaces worth registering, sorted by device name.

    `links` are {"index", "ifname", "address", "kind"} and `addresses` are
    {"index", "family", "address"}. Loopback and vxtap's own devices (the
    mirror's VXLAN and veth) are skipped: no session can mirror them. IPv6
    link-local addresses are left out because a target is reached through a
    routable address, and they change whenever a device is re-created.
    """
    by_index: dict[int, tuple[list[str], list[str]]] = {}
    for addr in addresses:
        v4, v6 = by_index.setdefault(int(addr["index"]), ([], []))
        ip = ipaddress.ip_address(str(addr["address"]))
        if ip.version == 4:
            v4.append(str(ip))
        elif not ip.is_link_local:
            v6.append(str(ip))
    selected = []
    for link in links:
        name = str(link["ifname"])
        if name == "lo" or link.get("kind") == "loopback" or is_own_device(name):
            continue
        v4, v6 = by_index.get(int(link["index"]), ([], []))
        mac = link.get("address")
        selected.append(
            Interface(
                device=name,
                mac=str(mac) if mac and mac != "00:00:00:00:00:00" else None,
                ipv4=tuple(sorted(v4, key=ipaddress.ip_address)),
                ipv6=tuple(sorted(v6, key=ipaddress.ip_address)),
            )
        )
    return tuple(sorted(selected, key=lambda i: i.device))


def discover(
    is_own_device: Callable[[str], bool], ipr: IPRoute | None = None
) -> tuple[Interface, ...]:
    """The current network namespace's interfaces, read over netlink."""
    own = ipr is None
    route = IPRoute() if ipr is None else ipr
    try:
        links = [
            {
                "index": msg["index"],
                "ifname": msg.get("ifname"),
                "address": msg.get("address"),
                "kind": msg.get(("linkinfo", "kind")),
            }
            for msg in route.get_links()
        ]
        addresses = [
            {"index": msg["index"], "family": msg["family"], "address": msg.get("address")}
            for msg in route.get_addr()
            if msg["family"] in (AF_INET, AF_INET6) and msg.get("address")
        ]
    finally:
        if own:
            route.close()
    return select_interfaces(links, addresses, is_own_device)
