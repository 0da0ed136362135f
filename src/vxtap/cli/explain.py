"""`vxtap explain`: which session mirrors a packet on a port, and why (docs/behaviour.md §2)."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import click
from pydantic import ValidationError

from vxtap.cli._api import CliError, connection_options
from vxtap.client import VxtapClient
from vxtap.dataplane.placement import (
    PORT_PROTOCOLS,
    FlowKey,
    build_table,
    flow_hash,
    placement,
)
from vxtap.evaluate import ETHERTYPE_ARP, Packet, Verdict, port_by_name
from vxtap.evaluate import explain as evaluate
from vxtap.model import IP_PROTOCOL_NUMBER, DesiredState, Direction, Port, Protocol, TargetKind

ETHERTYPE_NAMES = {"arp": ETHERTYPE_ARP, "lldp": 0x88CC, "ipv4": 0x0800, "ipv6": 0x86DD}


def parse_protocol(text: str) -> int:
    """`tcp`, `udp`, `icmp`, `icmpv6` (any case) or an IP protocol number 0-255."""
    if text.isdigit() and 0 <= int(text) <= 255:
        return int(text)
    try:
        return IP_PROTOCOL_NUMBER[Protocol(text.upper())]
    except (ValueError, KeyError):
        raise CliError(
            f"--protocol {text!r} is not tcp, udp, icmp, icmpv6 or a protocol number 0-255"
        ) from None


def parse_ethertype(text: str) -> int:
    """A name (arp, lldp, ipv4, ipv6) or a number such as 0x0806."""
    if text.lower() in ETHERTYPE_NAMES:
        return ETHERTYPE_NAMES[text.lower()]
    try:
        value = int(text, 0)
    except ValueError:
        value = -1
    if not 0 <= value <= 0xFFFF:
        raise CliError(f"--ethertype {text!r} is not arp, lldp, ipv4, ipv6 or a number 0-0xffff")
    return value


def build_packet(
    ethertype: str | None,
    protocol: str | None,
    src: str | None,
    dst: str | None,
    sport: int | None,
    dport: int | None,
    non_first_fragment: bool = False,
) -> Packet:
    number = parse_ethertype(ethertype) if ethertype is not None else None
    if number is not None and number not in (0x0800, 0x86DD):
        if any(v is not None for v in (protocol, src, dst, sport, dport)) or non_first_fragment:
            raise CliError(
                "a non-IP --ethertype takes no --protocol, --src, --dst, ports or --fragment"
            )
        return Packet.non_ip(number)
    if protocol is None or src is None or dst is None:
        raise CliError("an IP packet needs --protocol, --src and --dst (or a non-IP --ethertype)")
    try:
        source, destination = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    except ValueError as error:
        raise CliError(str(error)) from None
    if number is not None and {0x0800: 4, 0x86DD: 6}[number] != source.version:
        raise CliError(f"--src {src} does not fit --ethertype {ethertype}")
    try:
        return Packet.ip(
            parse_protocol(protocol),
            source,
            destination,
            sport,
            dport,
            non_first_fragment=non_first_fragment,
        )
    except ValidationError as error:
        messages = (str(e["msg"]).removeprefix("Value error, ") for e in error.errors())
        raise CliError("; ".join(messages)) from None


def find_port(client: VxtapClient, name: str) -> tuple[str, Port | None, DesiredState]:
    """(host, port, desired state of that host) for a port id or HOST/DEVICE."""
    host = name.split("/", 1)[0] if "/" in name else client.show_port(name)["binding:host_id"]
    state = client.desired_state(host)
    return host, port_by_name(state, name), state


def packet_flow_key(packet: Packet) -> FlowKey | None:
    """What the mirror program hashes of this packet (`placement.flow_key`), or None when
    that depends on bytes the packet's fields do not give (ports of protocols other
    than TCP and UDP)."""
    if packet.src is None or packet.dst is None or packet.protocol is None:
        return FlowKey(None)
    addresses = (packet.src.packed, packet.dst.packed)
    if packet.non_first_fragment:
        # An IPv6 fragment's next header is not walked; an IPv4 one keeps its protocol.
        return FlowKey(addresses, None if packet.src.version == 6 else packet.protocol)
    if packet.protocol in PORT_PROTOCOLS:
        if packet.sport is None or packet.dport is None:
            return None
        return FlowKey(addresses, packet.protocol, (packet.sport, packet.dport))
    return FlowKey(addresses, packet.protocol)


def group_member(state: DesiredState, group_id: str, packet: Packet) -> dict[str, Any]:
    """Which member of a target group a packet's copy goes to: the placement table over
    the healthy members' port ids, indexed by the packet's symmetric flow hash
    (docs/elb.md, "Placement")."""
    group = next((g for g in state.groups if g.id == group_id), None)
    healthy = [] if group is None else [m for m in group.members if m.healthy]
    answer: dict[str, Any] = {"group_id": group_id, "member": None, "number": None}
    if not healthy:
        answer["reason"] = "no healthy member: the copy is dropped and counted as unplaced"
        return answer
    key = packet_flow_key(packet)
    if key is None:
        answer["reason"] = "the member depends on the ports, which this protocol's fields lack"
        return answer
    port_id = placement(build_table(m.port_id for m in healthy), flow_hash(key))
    answer.update(
        member=port_id,
        number=next(m.number for m in healthy if m.port_id == port_id),
        reason=f"flow hash over both directions, {len(healthy)} healthy member(s)",
    )
    return answer


def chosen_member(state: DesiredState, verdict: Verdict, packet: Packet) -> dict[str, Any] | None:
    """The group member of a verdict whose session mirrors to a target group; None for
    a verdict that mirrors to a port or not at all."""
    kinds = {s.id: s.target_kind for s in state.sessions}
    if verdict.target_id is None or kinds.get(verdict.session_id or "") != TargetKind.ELB:
        return None
    return group_member(state, verdict.target_id, packet)


def render(verdict: Verdict, port: Port, member: dict[str, Any] | None = None) -> str:
    where = f"{port.host}/{port.device} ({port.id})"
    lines = [f"{verdict.packet}, {verdict.direction} on {where}"]
    if verdict.mirrored and member is not None:
        chosen = (
            f"member {member['member']} (number {member['number']})"
            if member["member"]
            else "no member"
        )
        lines.append(
            f"MIRRORED: {verdict.reason}; VXLAN vni {verdict.vni} to target group "
            f"{member['group_id']}, {chosen}: {member['reason']}"
        )
    elif verdict.mirrored:
        lines.append(
            f"MIRRORED: {verdict.reason}; VXLAN vni {verdict.vni} to port {verdict.target_id}"
        )
    else:
        lines.append(f"NOT MIRRORED: {verdict.reason}")
    for number, trial in enumerate(verdict.trials, 1):
        lines.append(
            f"  {number}. session {trial.session_name} (priority {trial.session_priority}, "
            f"{trial.session_id}): {trial.outcome}: {trial.reason}"
            + (f" [rule {trial.rule_id}]" if trial.rule_id else "")
        )
    return "\n".join(lines)


@click.command()
@click.option("--port", "port_name", required=True, help="Source port: id or HOST/DEVICE.")
@click.option(
    "--direction",
    required=True,
    type=click.Choice([d.value for d in Direction]),
    help="ingress = received by the port, egress = sent by it.",
)
@click.option("--protocol", help="tcp, udp, icmp, icmpv6 or an IP protocol number.")
@click.option("--src", help="Source IP address.")
@click.option("--dst", help="Destination IP address.")
@click.option("--sport", type=click.IntRange(0, 65535), help="Source port (TCP/UDP).")
@click.option("--dport", type=click.IntRange(0, 65535), help="Destination port (TCP/UDP).")
@click.option("--ethertype", help="arp, lldp, ipv4, ipv6 or a number (non-IP frames: arp...).")
@click.option(
    "--fragment",
    "non_first_fragment",
    is_flag=True,
    help="A non-first IP fragment (offset > 0): it carries no ports, so give none.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the verdict as JSON.")
@connection_options
def explain(
    client: VxtapClient,
    port_name: str,
    direction: str,
    protocol: str | None,
    src: str | None,
    dst: str | None,
    sport: int | None,
    dport: int | None,
    ethertype: str | None,
    non_first_fragment: bool,
    as_json: bool,
) -> None:
    """Explain which session mirrors a packet seen on a port, and why.

    Evaluates docs/behaviour.md §2 against the port's host's desired state, fetched
    from the server: sessions by priority, rules by priority, first match decides.
    """
    packet = build_packet(ethertype, protocol, src, dst, sport, dport, non_first_fragment)
    host, port, state = find_port(client, port_name)
    if port is None:
        raise CliError(f"port {port_name!r} is not a port of host {host!r}")
    verdict = evaluate(state, port.id, Direction(direction), packet)
    member = chosen_member(state, verdict, packet)
    if as_json:
        answer = verdict.model_dump(mode="json")
        answer["mirrored"] = verdict.mirrored
        if member is not None:
            answer["target_group"] = member
        click.echo(json.dumps(answer, indent=2))
    else:
        click.echo(render(verdict, port, member))
