"""Which of the host's network interfaces the agent registers as ports.

`select_interfaces` is pure (link and address records in, values out);
`discover` is the thin adapter that reads the current namespace.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from vxtap import model
from vxtap.model import Interface


def select_interfaces(
    links: Iterable[Mapping[str, Any]],
    addresses: Iterable[Mapping[str, Any]],
    is_own_device: Callable[[str], bool],
) -> tuple[Interface, ...]:
    """The interfaces worth registering, sorted by device name.

    `links` are {"index", "ifname", "address", "kind"} and `addresses` are
    {"index", "address"}. Loopback and vxtap's own devices (the
    mirror's VXLAN and veth) are skipped: no session can mirror them. Addresses
    the server refuses for a port (`model.address_refusal`: link-local, loopback,
    multicast, ...) are left out, so one such address (IPv6 link-local on every
    device, 169.254/16 on some cloud hosts) does not get the whole registration
    refused; a target is reached through a routable address anyway.
    """
    by_index: dict[int, tuple[list[str], list[str]]] = {}
    for addr in addresses:
        v4, v6 = by_index.setdefault(int(addr["index"]), ([], []))
        ip = ipaddress.ip_address(str(addr["address"]))
        if model.address_refusal(ip) is None:
            (v4 if ip.version == 4 else v6).append(str(ip))
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
    is_own_device: Callable[[str], bool], run: Callable[[list[str]], str] | None = None
) -> tuple[Interface, ...]:
    """The current network namespace's interfaces, from `ip -d -j addr show`.

    iproute2's JSON, not pyroute2, which decodes every attribute of every link in
    Python (the agent does not import pyroute2: docs/dataplane.md, "Kernel reads
    and writes, without pyroute2").
    """
    output = (run or _run)(["ip", "-d", "-j", "addr", "show"])
    links: list[dict[str, Any]] = []
    addresses: list[dict[str, Any]] = []
    for item in json.loads(output):
        index = int(item["ifindex"])
        links.append(
            {
                "index": index,
                "ifname": item.get("ifname", ""),
                "address": item.get("address"),
                "kind": "loopback"
                if item.get("link_type") == "loopback"
                else item.get("linkinfo", {}).get("info_kind"),
            }
        )
        addresses.extend(
            {"index": index, "family": a.get("family"), "address": a["local"]}
            for a in item.get("addr_info", [])
            if a.get("family") in ("inet", "inet6") and a.get("local")
        )
    return select_interfaces(links, addresses, is_own_device)


def _run(argv: list[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=10).stdout


def local_broadcasts(run: Callable[[list[str]], str] | None = None) -> frozenset[str]:
    """The IPv4 broadcast addresses of this namespace's subnets, from the kernel's local
    routing table (what it would send as a link-layer broadcast)."""
    output = (run or _run)(
        ["ip", "-4", "-j", "route", "show", "table", "local", "type", "broadcast"]
    )
    return frozenset(str(route["dst"]) for route in json.loads(output or "[]") if "dst" in route)
