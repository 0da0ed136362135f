"""`vxtap target-group create|list|show|update|delete|add-members|remove-members`:
groups of collector ports that `elb` sessions mirror to (docs/elb.md).

Thin: each command turns its options into one `VxtapClient` call and prints the
answer with `out.emit` (docs/cli.md). Ports may be named HOST/DEVICE.
"""

from __future__ import annotations

from collections.abc import Sequence

import click

from vxtap.cli import _output as out
from vxtap.cli._api import CliError, OneLineErrorGroup, connection_options, list_items, where
from vxtap.cli.ports import PORT_HELP, PortDirectory
from vxtap.client import VxtapClient
from vxtap.wire.answers import TargetGroupOut


@click.group("target-group", cls=OneLineErrorGroup)
def target_group_group() -> None:
    """Target groups: collector ports that share a session's flows (elb targets)."""


def _print_group(client: VxtapClient, group: TargetGroupOut, as_json: bool) -> None:
    out.emit(group, as_json, lambda g: out.show_target_group(g, PortDirectory(client).names()))


@target_group_group.command("create")
@click.argument("name")
@click.option("--member", "members", multiple=True, help=f"Repeatable; {PORT_HELP}.")
@click.option("--description", help="0-255 characters, no < or >.")
@out.json_option
@connection_options
def target_group_create(
    client: VxtapClient,
    as_json: bool,
    name: str,
    members: Sequence[str],
    description: str | None,
) -> None:
    """Create a target group called NAME (members may be added later)."""
    ports = PortDirectory(client).resolve_all(members) if members else []
    group = client.create_target_group(name, description=description, ports=ports)
    _print_group(client, group, as_json)


@target_group_group.command("list")
@click.option("--name", help="Only groups with this name.")
@click.option("--limit", type=int, help="At most this many (one page; default: all).")
@click.option("--marker", help="Start after this group id.")
@out.json_option
@connection_options
def target_group_list(
    client: VxtapClient, as_json: bool, name: str | None, limit: int | None, marker: str | None
) -> None:
    """List target groups, with their member counts."""
    items = list_items(
        client.iter_target_groups,
        client.list_target_groups,
        where(name=name),
        limit=limit,
        marker=marker,
    )
    out.emit(items, as_json, out.list_target_groups)


@target_group_group.command("show")
@click.argument("group_id", metavar="GROUP_ID")
@out.json_option
@connection_options
def target_group_show(client: VxtapClient, as_json: bool, group_id: str) -> None:
    """Show a target group: its members, their numbers and health."""
    _print_group(client, client.show_target_group(group_id), as_json)


@target_group_group.command("update")
@click.argument("group_id", metavar="GROUP_ID")
@click.option("--name")
@click.option("--description")
@out.json_option
@connection_options
def target_group_update(
    client: VxtapClient, as_json: bool, group_id: str, name: str | None, description: str | None
) -> None:
    """Rename a target group or change its description."""
    if name is None and description is None:
        raise CliError("nothing to update: give --name and/or --description")
    group = client.update_target_group(group_id, name=name, description=description)
    _print_group(client, group, as_json)


@target_group_group.command("add-members")
@click.argument("group_id", metavar="GROUP_ID")
@click.argument("ports", metavar="PORT...", nargs=-1, required=True)
@out.json_option
@connection_options
def target_group_add_members(
    client: VxtapClient, as_json: bool, group_id: str, ports: Sequence[str]
) -> None:
    """Add collector ports to a group; each gets the lowest free number.

    PORT: a port id or HOST/DEVICE. Not a source of a session that mirrors to the group.
    """
    group = client.add_members(group_id, PortDirectory(client).resolve_all(ports))
    _print_group(client, group, as_json)


@target_group_group.command("remove-members")
@click.argument("group_id", metavar="GROUP_ID")
@click.argument("ports", metavar="PORT...", nargs=-1, required=True)
@out.json_option
@connection_options
def target_group_remove_members(
    client: VxtapClient, as_json: bool, group_id: str, ports: Sequence[str]
) -> None:
    """Remove ports from a group (a group a session uses keeps at least one)."""
    group = client.remove_members(group_id, PortDirectory(client).resolve_all(ports))
    _print_group(client, group, as_json)


@target_group_group.command("delete")
@click.argument("group_ids", metavar="GROUP_ID...", nargs=-1, required=True)
@connection_options
def target_group_delete(client: VxtapClient, group_ids: Sequence[str]) -> None:
    """Delete target groups. Refused while a session mirrors to the group."""
    for group_id in group_ids:
        client.delete_target_group(group_id)
        out.done(f"deleted target group {group_id}")
