"""`vxtap rule create|list|show|update|delete`: the rules of mirror filters.

Thin: each command turns its options into one `VxtapClient` call and prints the
answer with `out.emit` (docs/cli.md). Validation is the server's.
"""

from __future__ import annotations

from collections.abc import Sequence

import click

from vxtap.cli import _output as out
from vxtap.cli._api import (
    CliError,
    OneLineErrorGroup,
    choice,
    connection_options,
    list_items,
    where,
)
from vxtap.client import VxtapClient
from vxtap.model import Action, Direction, EtherType, Protocol

ANY = out.ANY


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
@click.option("--direction", type=choice(Direction), required=True, help="ingress = received.")
@click.option("--priority", type=int, required=True, help="1-65535, unique per direction.")
@click.option("--protocol", type=choice(Protocol), required=True)
@click.option("--action", type=choice(Action), default="accept", show_default=True)
@click.option("--ethertype", type=choice(EtherType), default="IPv4", show_default=True)
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
    out.emit(rule, as_json, out.show_rule)


@rule_group.command("list")
@click.option("--filter", "filter_id", help="Only this filter's rules.")
@click.option("--direction", type=choice(Direction))
@click.option("--protocol", type=choice(Protocol))
@click.option("--action", type=choice(Action))
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
    wanted = where(
        traffic_mirror_filter_id=filter_id, direction=direction, protocol=protocol, action=action
    )
    rules = list_items(client.iter_rules, client.list_rules, wanted, limit=limit, marker=marker)
    out.emit(rules, as_json, out.list_rules)


@rule_group.command("show")
@click.argument("rule_id", metavar="RULE_ID")
@out.json_option
@connection_options
def rule_show(client: VxtapClient, as_json: bool, rule_id: str) -> None:
    """Show a mirror filter rule."""
    out.emit(client.show_rule(rule_id), as_json, out.show_rule)


@rule_group.command("update")
@click.argument("rule_id", metavar="RULE_ID")
@click.option("--priority", type=int)
@click.option("--protocol", type=choice(Protocol))
@click.option("--action", type=choice(Action))
@click.option("--ethertype", type=choice(EtherType))
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
    out.emit(rule, as_json, out.show_rule)


@rule_group.command("delete")
@click.argument("rule_ids", metavar="RULE_ID...", nargs=-1, required=True)
@connection_options
def rule_delete(client: VxtapClient, rule_ids: Sequence[str]) -> None:
    """Delete mirror filter rules."""
    for rule_id in rule_ids:
        client.delete_rule(rule_id)
        out.done(f"deleted rule {rule_id}")
