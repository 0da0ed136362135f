"""`vxtap port list|show|create|delete`: the interfaces sessions mirror from and to.

Agents register their hosts' interfaces; `create` is for a target on a machine
that runs no agent. `PortDirectory` resolves HOST/DEVICE names to port ids for
every command that takes a port (`vxtap.cli.sessions` too).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

import click

from vxtap.cli import _output as out
from vxtap.cli._api import CliError, OneLineErrorGroup, connection_options, where
from vxtap.client import VxtapClient
from vxtap.wire.answers import PortV1Out

PORT_HELP = "a port id or HOST/DEVICE"


class PortDirectory:
    """HOST/DEVICE <-> port id, each list fetched at most once per command."""

    def __init__(self, client: VxtapClient) -> None:
        self._client = client
        self._by_host: dict[str, list[PortV1Out]] = {}
        self._all: list[PortV1Out] | None = None

    def names(self) -> dict[str, str]:
        """Every port's HOST/DEVICE by id, for tables."""
        if self._all is None:
            self._all = list(self._client.iter_ports())
        return {p["id"]: f"{p['binding:host_id']}/{p['name']}" for p in self._all}

    def on_host(self, host: str) -> list[PortV1Out]:
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


@click.group("port", cls=OneLineErrorGroup)
def port_group() -> None:
    """Ports: the network interfaces sessions mirror from and to."""


@port_group.command("list")
@click.option("--host", help="Only this host's ports.")
@out.json_option
@connection_options
def port_list(client: VxtapClient, as_json: bool, host: str | None) -> None:
    """List ports (registered by agents or created by hand)."""
    ports = list(client.iter_ports(where=where(**{"binding:host_id": host})))
    out.emit(ports, as_json, out.list_ports)


@port_group.command("show")
@click.argument("port", metavar="PORT")
@out.json_option
@connection_options
def port_show(client: VxtapClient, as_json: bool, port: str) -> None:
    """Show a port, by id or HOST/DEVICE."""
    out.emit(client.show_port(PortDirectory(client).resolve(port)), as_json, out.show_port)


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
    out.emit(port, as_json, out.show_created_port)


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
