"""`vxtap filter|rule|session|port ...`: every API operation, for people.

Thin: each command turns its options into one `VxtapClient` call and prints
the answer (`_output`). Validation is the server's (one source of truth for
ranges and formats); the CLI only parses types and resolves HOST/DEVICE port
names to ids.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

import click

from vxtap.cli import _output as out
from vxtap.cli._api import CliError, OneLineErrorGroup, connection_options
from vxtap.client import PortV1JSON, QueryValue, SessionJSON, VxtapClient
from vxtap.model import Action, Direction, EtherType, Protocol

PORT_HELP = "a port id or HOST/DEVICE"
ANY = out.ANY


def _choice(enum: Iterable[str]) -> click.Choice[str]:
    return click.Choice([str(e) for e in enum], case_sensitive=False)


def _where(**fields: QueryValue | None) -> dict[str, QueryValue]:
    return {k: v for k, v in fields.items() if v is not None}


class PortDirectory:
    """HOST/DEVICE <-> port id, each list fetched at most once per command."""

    def __init__(self, client: VxtapClient) -> None:
        self._client = client
        self._by_host: dict[str, list[PortV1JSON]] = {}
        self._all: list[PortV1JSON] | None = None

    def names(self) -> dict[str, str]:
        """Every port's HOST/DEVICE by id, for tables."""
        if self._all is None:
            self._all = list(self._client.iter_ports())
        return {p["id"]: f"{p['binding:host_id']}/{p['name']}" for p in self._all}

    def on_host(self, host: str) -> list[PortV1JSON]:
        if host not in self._by_host:
            where = {"binding:host_id": host}
            self._by_host[host] = list(self._client.iter_ports(where=where))
        return self._by_host[host]

    def resolve(self, reference: str) -> str:
        """A port id as given, or the id of the port named HOST/DEVICE."""
        if "/" not in reference:
            return reference
        host, _, device = reference.partition("/")
        if not host or not device or "/" in device:
            raise CliError(
                f"port {reference!r}: expected a port id or HOST/DEVICE, e.g. web-1/eth0"
            )
        on_host = self.on_host(host)
        for port in on_host:
            if port["name"] == device:
                return port["id"]
        if on_host:
            known = ", ".join(sorted(p["name"] for p in on_host))
            raise CliError(f"no port {reference!r}: host {host!r} has {known}")
        raise CliError(f"no port {reference!r}: no ports registered for host {host!r}")

    def resolve_all(self, references: Iterable[str]) -> list[str]:
        return [self.resolve(r) for r in references]


# --- filters ---------------------------------------------------------------------


@click.group("filter", cls=OneLineErrorGroup)
def filter_group() -> None:
    """Mirror filters: named sets of ingress and egress rules."""


@filter_group.command("create")
@click.argument("name")
@click.option("--description", help="0-255 characters, no < or >.")
@out.json_option
@connection_options
def filter_create(client: VxtapClient, as_json: bool, name: str, description: str | None) -> None:
    """Create a mirror filter.

    NAME: 1-64 letters, digits, _-. ; add its rules with `vxtap rule create`.
    """
    item = client.create_filter(name, description)
    if as_json:
        out.print_json(item)
    else:
        out.show_filter(item)


@filter_group.command("list")
@click.option("--name", help="Only filters with this name.")
@click.option("--limit", type=int, help="At most this many (one page; default: all).")
@click.option("--marker", help="Start after this filter id.")
@out.json_option
@connection_options
def filter_list(
    client: VxtapClient, as_json: bool, name: str | None, limit: int | None, marker: str | None
) -> None:
    """List mirror filters."""
    where = _where(name=name)
    if limit is None and marker is None:
        items = list(client.iter_filters(where=where))
    else:
        items = client.list_filters(limit=limit, marker=marker, where=where).items
    if as_json:
        out.print_json(items)
    else:
        out.list_filters(items)


@filter_group.command("show")
@click.argument("filter_id", metavar="FILTER_ID")
@out.json_option
@connection_options
def filter_show(client: VxtapClient, as_json: bool, filter_id: str) -> None:
    """Show a mirror filter and its rules."""
    item = client.show_filter(filter_id)
    if as_json:
        out.print_json(item)
    else:
        out.show_filter(item)


@filter_group.command("update")
@click.argument("filter_id", metavar="FILTER_ID")
@click.option("--name")
@click.option("--description")
@out.json_option
@connection_options
def filter_update(
    client: VxtapClient,
    as_json: bool,
    filter_id: str,
    name: str | None,
    description: str | None,
) -> None:
    """Rename a mirror filter or change its description."""
    if name is None and description is None:
        raise CliError("nothing to update: give --name and/or --description")
    item = client.update_filter(filter_id, name=name, description=description)
    if as_json:
        out.print_json(item)
    else:
        out.show_filter(item)


@filter_group.command("delete")
@click.argument("filter_ids", metavar="FILTER_ID...", nargs=-1, required=True)
@connection_options
def filter_delete(client: VxtapClient, filter_ids: Sequence[str]) -> None:
    """Delete mirror filters.

    Refused while a session uses the filter.
    """
    for filter_id in filter_ids:
        client.delete_filter(filter_id)
        out.done(f"deleted filter {filter_id}")


# --- rules -----------------------------------------------------------------------


@click.group("rule", cls=OneLineErrorGroup)
def rule_group() -> None:
    """Mirror filter rules: which packets a filter accepts or rejects."""


def _any_is_empty(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    # The API reads "" as "absent" (match anything); people write "any", as the tables show.
    return "" if value is not None and value.strip().lower() == ANY else value


def _rule_match_options(command: click.decorators.FC) -> click.decorators.FC:
    match_options = [
        ("--source-cidr", "Source network, e.g. 192.168.0.161/32."),
        ("--destination-cidr", "Destination network, e.g. 192.168.0.230/32."),
        ("--source-ports", "Source port range START-END (TCP/UDP only)."),
        ("--destination-ports", "Destination port range, e.g. 1234-1234 (TCP/UDP only)."),
    ]
    options = [
        click.option(name, callback=_any_is_empty, help=f"{text} 'any' (the default) matches all.")
        for name, text in match_options
    ]
    options.append(click.option("--description", help="0-255 characters, no < or >."))
    for option in reversed(options):
        command = option(command)
    return command


@rule_group.command("create")
@click.option("--filter", "filter_id", required=True, help="The filter's id.")
@click.option("--direction", type=_choice(Direction), required=True, help="ingress = received.")
@click.option("--priority", type=int, required=True, help="1-65535, unique per direction.")
@click.option("--protocol", type=_choice(Protocol), required=True)
@click.option("--action", type=_choice(Action), default="accept", show_default=True)
@click.option("--ethertype", type=_choice(EtherType), default="IPv4", show_default=True)
@_rule_match_options
@out.json_option
@connection_options
def rule_create(
    client: VxtapClient,
    as_json: bool,
    filter_id: str,
    direction: str,
    priority: int,
    protocol: str,
    action: str,
    ethertype: str,
    source_cidr: str | None,
    destination_cidr: str | None,
    source_ports: str | None,
    destination_ports: str | None,
    description: str | None,
) -> None:
    """Add a rule to a mirror filter.

    Absent CIDRs and port ranges match anything.
    """
    rule = client.create_rule(
        filter_id,
        direction=direction,
        priority=priority,
        protocol=protocol,
        action=action,
        ethertype=ethertype,
        source_cidr_block=source_cidr,
        destination_cidr_block=destination_cidr,
        source_port_range=source_ports,
        destination_port_range=destination_ports,
        description=description,
    )
    if as_json:
        out.print_json(rule)
    else:
        out.show_rule(rule)


@rule_group.command("list")
@click.option("--filter", "filter_id", help="Only this filter's rules.")
@click.option("--direction", type=_choice(Direction))
@click.option("--protocol", type=_choice(Protocol))
@click.option("--action", type=_choice(Action))
@click.option("--limit", type=int, help="At most this many (one page; default: all).")
@click.option("--marker", help="Start after this rule id.")
@out.json_option
@connection_options
def rule_list(
    client: VxtapClient,
    as_json: bool,
    filter_id: str | None,
    direction: str | None,
    protocol: str | None,
    action: str | None,
    limit: int | None,
    marker: str | None,
) -> None:
    """List mirror filter rules."""
    where = _where(
        traffic_mirror_filter_id=filter_id, direction=direction, protocol=protocol, action=action
    )
    if limit is None and marker is None:
        rules = list(client.iter_rules(where=where))
    else:
        rules = client.list_rules(limit=limit, marker=marker, where=where).items
    if as_json:
        out.print_json(rules)
    else:
        out.list_rules(rules)


@rule_group.command("show")
@click.argument("rule_id", metavar="RULE_ID")
@out.json_option
@connection_options
def rule_show(client: VxtapClient, as_json: bool, rule_id: str) -> None:
    """Show a mirror filter rule."""
    rule = client.show_rule(rule_id)
    if as_json:
        out.print_json(rule)
    else:
        out.show_rule(rule)


@rule_group.command("update")
@click.argument("rule_id", metavar="RULE_ID")
@click.option("--priority", type=int)
@click.option("--protocol", type=_choice(Protocol))
@click.option("--action", type=_choice(Action))
@click.option("--ethertype", type=_choice(EtherType))
@_rule_match_options
@out.json_option
@connection_options
def rule_update(
    client: VxtapClient,
    as_json: bool,
    rule_id: str,
    priority: int | None,
    protocol: str | None,
    action: str | None,
    ethertype: str | None,
    source_cidr: str | None,
    destination_cidr: str | None,
    source_ports: str | None,
    destination_ports: str | None,
    description: str | None,
) -> None:
    """Change a rule ('any' clears a match field).

    A rule's filter and direction are fixed at creation.
    """
    changes = (priority, protocol, action, ethertype, source_cidr, destination_cidr)
    if all(v is None for v in (*changes, source_ports, destination_ports, description)):
        raise CliError("nothing to update: give at least one option (see --help)")
    rule = client.update_rule(
        rule_id,
        priority=priority,
        protocol=protocol,
        action=action,
        ethertype=ethertype,
        source_cidr_block=source_cidr,
        destination_cidr_block=destination_cidr,
        source_port_range=source_ports,
        destination_port_range=destination_ports,
        description=description,
    )
    if as_json:
        out.print_json(rule)
    else:
        out.show_rule(rule)


@rule_group.command("delete")
@click.argument("rule_ids", metavar="RULE_ID...", nargs=-1, required=True)
@connection_options
def rule_delete(client: VxtapClient, rule_ids: Sequence[str]) -> None:
    """Delete mirror filter rules."""
    for rule_id in rule_ids:
        client.delete_rule(rule_id)
        out.done(f"deleted rule {rule_id}")


# --- sessions --------------------------------------------------------------------


@click.group("session", cls=OneLineErrorGroup)
def session_group() -> None:
    """Mirror sessions: a filter, sources, a target, a VNI."""


def _print_session(client: VxtapClient, session: SessionJSON, as_json: bool) -> None:
    if as_json:
        out.print_json(session)
    else:
        filter_id = session["traffic_mirror_filter_id"]
        filter_names = {filter_id: client.show_filter(filter_id)["name"]}
        out.show_session(session, PortDirectory(client).names(), filter_names)


@session_group.command("create")
@click.argument("name")
@click.option("--filter", "filter_id", required=True, help="The mirror filter's id.")
@click.option("--source", "sources", multiple=True, required=True, help=f"Repeatable; {PORT_HELP}.")
@click.option("--target", required=True, help=f"Where mirrored packets go; {PORT_HELP}.")
@click.option("--priority", type=int, required=True, help="1-32766, unique per shared source.")
@click.option("--vni", type=int, help="VXLAN network id 0-16777215 [server default 1].")
@click.option("--packet-length", type=int, help="Bytes kept per packet 1-1460 [default 96].")
@click.option("--enabled/--disabled", default=None, help="[server default: enabled]")
@click.option("--description", help="0-255 characters, no < or >.")
@out.json_option
@connection_options
def session_create(
    client: VxtapClient,
    as_json: bool,
    name: str,
    filter_id: str,
    sources: Sequence[str],
    target: str,
    priority: int,
    vni: int | None,
    packet_length: int | None,
    enabled: bool | None,
    description: str | None,
) -> None:
    """Create a mirror session called NAME."""
    ports = PortDirectory(client)
    session = client.create_session(
        name,
        filter_id=filter_id,
        sources=ports.resolve_all(sources),
        target_id=ports.resolve(target),
        priority=priority,
        virtual_network_id=vni,
        packet_length=packet_length,
        enabled=enabled,
        description=description,
    )
    _print_session(client, session, as_json)


@session_group.command("list")
@click.option("--name", help="Only sessions with this name.")
@click.option("--filter", "filter_id", help="Only sessions using this filter.")
@click.option("--target", help=f"Only sessions mirroring to this port; {PORT_HELP}.")
@click.option("--vni", type=int)
@click.option("--enabled/--disabled", default=None)
@click.option("--limit", type=int, help="At most this many (one page; default: all).")
@click.option("--marker", help="Start after this session id.")
@out.json_option
@connection_options
def session_list(
    client: VxtapClient,
    as_json: bool,
    name: str | None,
    filter_id: str | None,
    target: str | None,
    vni: int | None,
    enabled: bool | None,
    limit: int | None,
    marker: str | None,
) -> None:
    """List mirror sessions."""
    ports = PortDirectory(client)
    where = _where(
        name=name,
        traffic_mirror_filter_id=filter_id,
        traffic_mirror_target_id=None if target is None else ports.resolve(target),
        virtual_network_id=vni,
        enabled=enabled,
    )
    if limit is None and marker is None:
        sessions = list(client.iter_sessions(where=where))
    else:
        sessions = client.list_sessions(limit=limit, marker=marker, where=where).items
    if as_json:
        out.print_json(sessions)
    else:
        filter_names = {f["id"]: f["name"] for f in client.iter_filters()}
        out.list_sessions(sessions, ports.names(), filter_names)


@session_group.command("show")
@click.argument("session_id", metavar="SESSION_ID")
@out.json_option
@connection_options
def session_show(client: VxtapClient, as_json: bool, session_id: str) -> None:
    """Show a mirror session."""
    _print_session(client, client.show_session(session_id), as_json)


@session_group.command("update")
@click.argument("session_id", metavar="SESSION_ID")
@click.option("--name")
@click.option("--description")
@click.option("--filter", "filter_id", help="Another mirror filter's id.")
@click.option("--target", help=PORT_HELP)
@click.option("--priority", type=int)
@click.option("--vni", type=int)
@click.option("--packet-length", type=int)
@click.option("--enabled/--disabled", default=None)
@out.json_option
@connection_options
def session_update(
    client: VxtapClient,
    as_json: bool,
    session_id: str,
    name: str | None,
    description: str | None,
    filter_id: str | None,
    target: str | None,
    priority: int | None,
    vni: int | None,
    packet_length: int | None,
    enabled: bool | None,
) -> None:
    """Change a session (not its sources).

    Sources change with `vxtap session add-sources` / `remove-sources`.
    """
    changes = (name, description, filter_id, target, priority, vni, packet_length, enabled)
    if all(v is None for v in changes):
        raise CliError("nothing to update: give at least one option (see --help)")
    session = client.update_session(
        session_id,
        name=name,
        description=description,
        filter_id=filter_id,
        target_id=None if target is None else PortDirectory(client).resolve(target),
        priority=priority,
        virtual_network_id=vni,
        packet_length=packet_length,
        enabled=enabled,
    )
    _print_session(client, session, as_json)


@session_group.command("add-sources")
@click.argument("session_id", metavar="SESSION_ID")
@click.argument("ports", metavar="PORT...", nargs=-1, required=True)
@out.json_option
@connection_options
def session_add_sources(
    client: VxtapClient, as_json: bool, session_id: str, ports: Sequence[str]
) -> None:
    """Add source ports to a session.

    PORT: a port id or HOST/DEVICE. A port is a source of at most 3 sessions.
    """
    session = client.add_sources(session_id, PortDirectory(client).resolve_all(ports))
    _print_session(client, session, as_json)


@session_group.command("remove-sources")
@click.argument("session_id", metavar="SESSION_ID")
@click.argument("ports", metavar="PORT...", nargs=-1, required=True)
@out.json_option
@connection_options
def session_remove_sources(
    client: VxtapClient, as_json: bool, session_id: str, ports: Sequence[str]
) -> None:
    """Remove source ports from a session.

    PORT: a port id or HOST/DEVICE.
    """
    session = client.remove_sources(session_id, PortDirectory(client).resolve_all(ports))
    _print_session(client, session, as_json)


@session_group.command("delete")
@click.argument("session_ids", metavar="SESSION_ID...", nargs=-1, required=True)
@connection_options
def session_delete(client: VxtapClient, session_ids: Sequence[str]) -> None:
    """Delete mirror sessions."""
    for session_id in session_ids:
        client.delete_session(session_id)
        out.done(f"deleted session {session_id}")


@session_group.command("stats")
@click.argument("session_ids", metavar="[SESSION_ID]...", nargs=-1)
@out.json_option
@connection_options
def session_stats(client: VxtapClient, as_json: bool, session_ids: Sequence[str]) -> None:
    """Mirrored packets and bytes per session and rule.

    Summed over the latest report of every host's agent; without SESSION_ID, all sessions.
    """
    stats = client.session_stats()
    if session_ids:
        # Unknown ids get the server's 404; known ones without a report count 0.
        sessions = [client.show_session(s) for s in session_ids]
        kept = {s: stats.sessions[s] for s in session_ids if s in stats.sessions}
        # A rule's counter is its filter's, so keep the rules of these sessions' filters.
        rule_ids = {
            rule["id"]
            for filter_id in {s["traffic_mirror_filter_id"] for s in sessions}
            for rule in client.iter_rules(where={"traffic_mirror_filter_id": filter_id})
        }
        rules = {r: c for r, c in stats.rules.items() if r in rule_ids}
        stats = stats.model_copy(update={"sessions": kept, "rules": rules})
    else:
        sessions = list(client.iter_sessions())
    if as_json:
        out.print_json(stats.model_dump(mode="json"))
    else:
        out.show_stats(stats, sessions)


# --- ports -----------------------------------------------------------------------


@click.group("port", cls=OneLineErrorGroup)
def port_group() -> None:
    """Ports: the network interfaces sessions mirror from and to."""


@port_group.command("list")
@click.option("--host", help="Only this host's ports.")
@out.json_option
@connection_options
def port_list(client: VxtapClient, as_json: bool, host: str | None) -> None:
    """List ports (registered by agents or created by hand)."""
    ports = list(client.iter_ports(where=_where(**{"binding:host_id": host})))
    if as_json:
        out.print_json(ports)
    else:
        out.list_ports(ports)


@port_group.command("show")
@click.argument("port", metavar="PORT")
@out.json_option
@connection_options
def port_show(client: VxtapClient, as_json: bool, port: str) -> None:
    """Show a port, by id or HOST/DEVICE."""
    item = client.show_port(PortDirectory(client).resolve(port))
    if as_json:
        out.print_json(item)
        return
    out.show_port(
        [
            ("id", item["id"]),
            ("host", item["binding:host_id"]),
            ("device", item["name"]),
            ("mac", item.get("mac_address") or ""),
            ("addresses", "\n".join(out.port_addresses(item))),
            ("status", item.get("status") or ""),
        ]
    )


@port_group.command("create")
@click.option("--host", required=True, help="The machine's name.")
@click.option("--device", required=True, help="The interface's name on it, e.g. eth0.")
@click.option("--ip", "addresses", multiple=True, required=True, help="Repeatable; IPv4 or IPv6.")
@click.option("--mac", help="The interface's MAC address.")
@out.json_option
@connection_options
def port_create(
    client: VxtapClient,
    as_json: bool,
    host: str,
    device: str,
    addresses: Sequence[str],
    mac: str | None,
) -> None:
    """Create a port by hand.

    For a target on a machine that runs no agent (an IDS appliance, a capture box).
    """
    ipv4: list[str] = []
    ipv6: list[str] = []
    for text in addresses:
        try:
            address = ipaddress.ip_address(text.strip())
        except ValueError:
            raise CliError(f"--ip {text!r} is not an IPv4 or IPv6 address") from None
        (ipv4 if address.version == 4 else ipv6).append(str(address))
    port = client.create_port(host, device, ipv4=ipv4, ipv6=ipv6, mac=mac)
    if as_json:
        out.print_json(port.model_dump(mode="json"))
        return
    out.show_port(
        [
            ("id", port.id),
            ("host", port.host),
            ("device", port.device),
            ("mac", port.mac or ""),
            ("addresses", "\n".join((*port.ipv4, *port.ipv6))),
        ]
    )


@port_group.command("delete")
@click.argument("ports", metavar="PORT...", nargs=-1, required=True)
@connection_options
def port_delete(client: VxtapClient, ports: Sequence[str]) -> None:
    """Delete ports, by id or HOST/DEVICE.

    Refused while a session names the port.
    """
    directory = PortDirectory(client)
    for reference in ports:
        port_id = directory.resolve(reference)
        client.delete_port(port_id)
        label = f"{reference} ({port_id})" if port_id != reference else port_id
        out.done(f"deleted port {label}")
