"""`vxtap filter create|list|show|update|delete`: mirror filters.

Thin: each command turns its options into one `VxtapClient` call and prints the
answer with `out.emit` (docs/cli.md). Validation is the server's.
"""

from __future__ import annotations

from collections.abc import Sequence

import click

from vxtap.cli import _output as out
from vxtap.cli._api import CliError, OneLineErrorGroup, connection_options, list_items, where
from vxtap.client import VxtapClient


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
    out.emit(client.create_filter(name, description), as_json, out.show_filter)


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
    items = list_items(
        client.iter_filters, client.list_filters, where(name=name), limit=limit, marker=marker
    )
    out.emit(items, as_json, out.list_filters)


@filter_group.command("show")
@click.argument("filter_id", metavar="FILTER_ID")
@out.json_option
@connection_options
def filter_show(client: VxtapClient, as_json: bool, filter_id: str) -> None:
    """Show a mirror filter and its rules."""
    out.emit(client.show_filter(filter_id), as_json, out.show_filter)


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
    out.emit(item, as_json, out.show_filter)


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
