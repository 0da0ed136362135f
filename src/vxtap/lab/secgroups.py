"""Security groups as one nftables ruleset for the VPC switch (pure).

Where the groups are enforced, and why: in the cloud a security group sits in
the hypervisor, in front of the server's NIC, so a dropped packet never shows
up in `tcpdump` inside the server. A filter inside the server's own namespace
cannot reproduce that: AF_PACKET taps (tcpdump, a collector) see every frame
before any netfilter hook of the receiving namespace runs. So the lab enforces
each server's groups in the VPC switch's namespace, on the frames the bridge
forwards to that server, in an `inet` table whose chains see bridged IP
through br_netfilter (per network namespace, switched on there) with
connection tracking, which makes the groups stateful as in the cloud.

Each server gets a chain `sg_<server>` reached by its address; the chain
accepts replies (ct state established,related) and what any of the server's
groups allows, and drops the rest through a named counter `dropped_<server>`
that `verify` reads to explain a packet that did not arrive.
"""

from __future__ import annotations

import ipaddress
import re

from vxtap.lab.scenario import GroupRule, Scenario, Server
from vxtap.model import IP_PROTOCOL_NUMBER, EtherType, Protocol

TABLE = "vxtap_lab_sg"


def ident(name: str) -> str:
    """An nft identifier for a server name (`ECS-source` -> `ecs_source`)."""
    return re.sub(r"[^a-z0-9_]", "_", name.lower())


def drop_counter(server: str) -> str:
    return f"dropped_{ident(server)}"


def link_local(mac: str) -> str:
    """The EUI-64 IPv6 link-local address Linux derives from a MAC."""
    octets = [int(b, 16) for b in mac.split(":")]
    octets[0] ^= 0x02
    eui = [*octets[:3], 0xFF, 0xFE, *octets[3:]]
    groups = [(eui[i] << 8) | eui[i + 1] for i in range(0, 8, 2)]
    return str(ipaddress.IPv6Address("fe80::" + ":".join(f"{g:x}" for g in groups)))


def members(scenario: Scenario, group: str) -> tuple[Server, ...]:
    return tuple(s for s in scenario.servers if group in s.groups)


def _match(scenario: Scenario, rule: GroupRule) -> str | None:
    """The nft match of one group rule, or None when it can match nothing (a
    group rule naming a group without members of that IP version)."""
    family = "ip" if rule.ethertype is EtherType.IPV4 else "ip6"
    parts: list[str] = []
    if rule.remote_is_group():
        addrs = [
            s.ipv4 if rule.ethertype is EtherType.IPV4 else link_local(s.mac)
            for s in members(scenario, rule.remote)
        ]
        if not addrs:
            return None
        parts.append(f"{family} saddr {{ {', '.join(addrs)} }}")
    else:
        parts.append(f"{family} saddr {rule.remote}")
    if rule.protocol is Protocol.ALL:
        parts.append(f"meta nfproto {'ipv4' if family == 'ip' else 'ipv6'}")
    else:
        parts.append(f"meta l4proto {IP_PROTOCOL_NUMBER[rule.protocol]}")
        if rule.ports is not None:
            proto = rule.protocol.value.lower()
            span = (
                str(rule.ports.start)
                if rule.ports.start == rule.ports.end
                else f"{rule.ports.start}-{rule.ports.end}"
            )
            parts.append(f"{proto} dport {span}")
    return " ".join(parts)


def render(scenario: Scenario) -> str:
    """The whole ruleset as an `nft -f` script; applying it twice gives the same
    kernel state (the table is flushed and refilled in one transaction)."""
    lines = [f"table inet {TABLE}", f"flush table inet {TABLE}", f"table inet {TABLE} {{"]
    for server in scenario.servers:
        lines.append(f"  counter {drop_counter(server.name)} {{ }}")
    for server in scenario.servers:
        lines.append(f"  chain sg_{ident(server.name)} {{")
        lines.append("    ct state established,related accept")
        # Neighbour discovery is the VPC's own plumbing, like ARP, which no group filters.
        lines.append(
            "    icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-advert } accept"
        )
        for group_name in server.groups:
            for rule in scenario.group(group_name).rules:
                match = _match(scenario, rule)
                if match is not None:
                    comment = f"{group_name}: {rule.description}".replace('"', "'")
                    lines.append(f'    {match} accept comment "{comment}"')
        lines.append(f'    counter name "{drop_counter(server.name)}" drop')
        lines.append("  }")
    lines.append("  chain forward {")
    lines.append("    type filter hook forward priority filter; policy accept;")
    for server in scenario.servers:
        chain = f"sg_{ident(server.name)}"
        lines.append(f"    ip daddr {server.ipv4} jump {chain}")
        lines.append(f"    ip6 daddr {link_local(server.mac)} jump {chain}")
    lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def allowing_rule(
    scenario: Scenario, server: Server, protocol: Protocol, port: int, source: str
) -> GroupRule | None:
    """The first rule of `server`'s groups that lets `protocol` `port` in from
    `source` (an IPv4 address), or None: the lab's explanation of a drop."""
    src = ipaddress.IPv4Address(source)
    for group_name in server.groups:
        for rule in scenario.group(group_name).rules:
            if rule.ethertype is not EtherType.IPV4:
                continue
            if rule.protocol not in (Protocol.ALL, protocol):
                continue
            if rule.ports is not None and port not in rule.ports:
                continue
            if rule.remote_is_group():
                if source not in {s.ipv4 for s in members(scenario, rule.remote)}:
                    continue
            elif src not in ipaddress.IPv4Network(rule.remote):
                continue
            return rule
    return None


def summary(scenario: Scenario, server: Server) -> str:
    """One line per server for people: address, MAC, what its groups let in."""
    allowed: list[str] = []
    for group_name in server.groups:
        for rule in scenario.group(group_name).rules:
            what = rule.protocol.value if rule.protocol is not Protocol.ALL else "all"
            if rule.ports is not None:
                what += f" {rule.ports.start}" + (
                    f"-{rule.ports.end}" if rule.ports.end != rule.ports.start else ""
                )
            if rule.remote_is_group():
                what += f" {rule.ethertype.value} from {rule.remote}"
            elif rule.remote != "0.0.0.0/0":
                what += f" from {rule.remote}"
            allowed.append(what)
    return (
        f"{server.name} {server.ipv4} {server.mac} [{', '.join(server.groups)}] "
        f"in: {', '.join(allowed)}; out: all"
    )
