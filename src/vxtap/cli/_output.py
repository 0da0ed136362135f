"""How the resource commands print: rich tables for people, `--json` for scripts.

`--json` prints the server's JSON objects unchanged (a list command prints a
JSON array of them), so `jq -r .id` works on any create/show. Tables show
"any" where a rule field is absent (absent matches anything, docs/behaviour.md §2.3)
and name ports as HOST/DEVICE next to their ids, because that is how people
know their interfaces.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import click
from pydantic import BaseModel
from rich import box
from rich.console import Console, RenderableType
from rich.table import Table

from vxtap.model import Port, SessionStats
from vxtap.wire.answers import FilterOut, PortV1Out, RuleOut, SessionOut, TargetGroupOut

ANY = "any"
T = TypeVar("T")


def json_option(command: Any) -> Any:
    return click.option(
        "--json", "as_json", is_flag=True, help="Print the API's JSON objects instead of a table."
    )(command)


def console() -> Console:
    # A pipe gets no wrapping: long ids stay whole for grep and cut.
    if sys.stdout.isatty():
        return Console(highlight=False)
    return Console(highlight=False, width=400, no_color=True)


def emit(answer: T, as_json: bool, show: Callable[[T], None]) -> None:
    """Print one answer, an item or a list: its JSON with `--json` (the server's objects
    unchanged; a pydantic value as its JSON dump), else `show`'s tables."""
    if not as_json:
        show(answer)
    elif isinstance(answer, BaseModel):
        print_json(answer.model_dump(mode="json"))
    else:
        print_json(answer)


def render(*renderables: RenderableType) -> None:
    """Print tables; into a pipe without rich's trailing padding, so lines diff and grep cleanly."""
    out = console()
    if out.is_terminal:
        for renderable in renderables:
            out.print(renderable)
        return
    with out.capture() as captured:
        for renderable in renderables:
            out.print(renderable)
    click.echo("\n".join(line.rstrip() for line in captured.get().splitlines()))


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def _table(*columns: str) -> Table:
    # Into a pipe: no ruling line under the header, so `awk '{print $1}'` sees only fields.
    style = box.SIMPLE_HEAD if sys.stdout.isatty() else None
    table = Table(box=style, show_edge=False, pad_edge=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def _fields(rows: Iterable[tuple[str, str]]) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    for name, value in rows:
        grid.add_row(name, value)
    return grid


def label(resource_id: str, names: Mapping[str, str]) -> str:
    """`name (id)` when the name is known, else the id."""
    name = names.get(resource_id)
    return f"{name} ({resource_id})" if name else resource_id


# --- filters and rules ---


def rule_rows(rules: Sequence[RuleOut], *, with_filter: bool = False) -> Table:
    columns = ["ID", "DIRECTION", "PRIORITY", "ACTION", "ETHERTYPE", "PROTOCOL"]
    columns += ["SOURCE", "SRC PORTS", "DESTINATION", "DST PORTS"]
    if with_filter:
        columns.append("FILTER")
    table = _table(*columns)
    for rule in rules:
        row = [
            rule["id"],
            rule["direction"],
            str(rule["priority"]),
            rule["action"],
            rule["ethertype"],
            rule["protocol"],
            rule.get("source_cidr_block") or ANY,
            rule.get("source_port_range") or ANY,
            rule.get("destination_cidr_block") or ANY,
            rule.get("destination_port_range") or ANY,
        ]
        if with_filter:
            row.append(rule["traffic_mirror_filter_id"])
        table.add_row(*row)
    return table


def show_rule(rule: RuleOut) -> None:
    render(
        _fields(
            [
                ("id", rule["id"]),
                ("filter", rule["traffic_mirror_filter_id"]),
                ("direction", rule["direction"]),
                ("priority", str(rule["priority"])),
                ("action", rule["action"]),
                ("ethertype", rule["ethertype"]),
                ("protocol", rule["protocol"]),
                ("source", rule.get("source_cidr_block") or ANY),
                ("source ports", rule.get("source_port_range") or ANY),
                ("destination", rule.get("destination_cidr_block") or ANY),
                ("destination ports", rule.get("destination_port_range") or ANY),
                ("description", rule.get("description") or ""),
                ("created", rule["created_at"]),
                ("updated", rule["updated_at"]),
            ]
        )
    )


def list_rules(rules: Sequence[RuleOut]) -> None:
    render(rule_rows(rules, with_filter=True))


def show_filter(item: FilterOut) -> None:
    fields = _fields(
        [
            ("id", item["id"]),
            ("name", item["name"]),
            ("description", item.get("description") or ""),
            ("created", item["created_at"]),
            ("updated", item["updated_at"]),
        ]
    )
    rules = [*item["ingress_rules"], *item["egress_rules"]]
    if rules:
        render(fields, "", rule_rows(rules))
    else:
        render(fields, "", "no rules: a session with this filter mirrors nothing")


def list_filters(items: Sequence[FilterOut]) -> None:
    table = _table("ID", "NAME", "INGRESS RULES", "EGRESS RULES", "DESCRIPTION")
    for item in items:
        table.add_row(
            item["id"],
            item["name"],
            str(len(item["ingress_rules"])),
            str(len(item["egress_rules"])),
            item.get("description") or "",
        )
    render(table)


# --- sessions ---


def _target(
    session: SessionOut,
    names: Mapping[str, str],
    shown: Callable[[str, Mapping[str, str]], str] = lambda i, n: n.get(i, i),
) -> str:
    """A port's HOST/DEVICE, or a target group's name said to be one (no square
    brackets: rich would read them as markup)."""
    text = shown(session["traffic_mirror_target_id"], names)
    return f"group {text}" if session["traffic_mirror_target_type"] == "elb" else text


def show_session(
    session: SessionOut, port_names: Mapping[str, str], filter_names: Mapping[str, str]
) -> None:
    sources = session["traffic_mirror_sources"]
    render(
        _fields(
            [
                ("id", session["id"]),
                ("name", session["name"]),
                ("description", session.get("description") or ""),
                ("enabled", "yes" if session["enabled"] else "no"),
                ("priority", str(session["priority"])),
                ("filter", label(session["traffic_mirror_filter_id"], filter_names)),
                (
                    "sources",
                    "\n".join(label(s, port_names) for s in sources) if sources else "none",
                ),
                ("target", _target(session, port_names, label)),
                ("vni", str(session["virtual_network_id"])),
                ("packet length", str(session["packet_length"])),
                ("created", session["created_at"]),
                ("updated", session["updated_at"]),
            ]
        )
    )


def list_sessions(
    sessions: Sequence[SessionOut], port_names: Mapping[str, str], filter_names: Mapping[str, str]
) -> None:
    table = _table(
        "ID", "NAME", "ENABLED", "PRIORITY", "VNI", "LENGTH", "FILTER", "SOURCES", "TARGET"
    )
    for session in sessions:
        table.add_row(
            session["id"],
            session["name"],
            "yes" if session["enabled"] else "no",
            str(session["priority"]),
            str(session["virtual_network_id"]),
            str(session["packet_length"]),
            filter_names.get(
                session["traffic_mirror_filter_id"], session["traffic_mirror_filter_id"]
            ),
            ", ".join(port_names.get(s, s) for s in session["traffic_mirror_sources"]) or "none",
            _target(session, port_names),
        )
    render(table)


# --- target groups ---


def show_target_group(group: TargetGroupOut, port_names: Mapping[str, str]) -> None:
    render(
        _fields(
            [
                ("id", group["id"]),
                ("name", group["name"]),
                ("description", group.get("description") or ""),
                ("created", group["created_at"]),
                ("updated", group["updated_at"]),
            ]
        )
    )
    # Health as the server stored it from collector heartbeats (docs/elb.md); SHARE: the
    # member's slots of the placement table over the healthy members (its part of the flows).
    shares = table_shares(m["port_id"] for m in group["members"] if m["healthy"])
    table = _table("NUMBER", "PORT", "HEALTHY", "SHARE", "LAST HEARTBEAT")
    for member in group["members"]:
        share = shares.get(member["port_id"])
        table.add_row(
            str(member["number"]),
            label(member["port_id"], port_names),
            "yes" if member["healthy"] else "no",
            "-" if share is None else f"{share:.1f}%",
            member["last_heartbeat"] or "never",
        )
    render(table if group["members"] else "no members")


def list_target_groups(groups: Sequence[TargetGroupOut]) -> None:
    table = _table("ID", "NAME", "MEMBERS", "HEALTHY")
    for group in groups:
        members = group["members"]
        table.add_row(
            group["id"],
            group["name"],
            str(len(members)),
            str(sum(1 for m in members if m["healthy"])),
        )
    render(table)


def show_stats(stats: SessionStats, sessions: Sequence[SessionOut]) -> None:
    # UNCUT: copies not sent because they could not be cut to packet_length; UNPLACED:
    # copies of an `elb` session whose target group had no healthy member.
    table = _table("SESSION", "NAME", "ENABLED", "PACKETS", "BYTES", "UNCUT", "UNPLACED")
    for session in sessions:
        counter = stats.sessions.get(session["id"])
        table.add_row(
            session["id"],
            session["name"],
            "yes" if session["enabled"] else "no",
            str(counter.packets if counter else 0),
            str(counter.bytes if counter else 0),
            str(counter.uncut_packets if counter else 0),
            str(counter.unplaced_packets if counter else 0),
        )
    parts: list[RenderableType] = [table]
    if stats.members:
        # `elb` sessions: the copies sent to each member of the session's target group.
        members = _table("SESSION", "MEMBER PORT", "PACKETS", "BYTES")
        for key, counter in sorted(stats.members.items()):
            session_id, _, port_id = key.partition("/")
            members.add_row(session_id, port_id, str(counter.packets), str(counter.bytes))
        parts += ["", members]
    if stats.rules:
        rules = _table("RULE", "PACKETS", "BYTES")
        for rule_id, counter in sorted(stats.rules.items()):
            rules.add_row(rule_id, str(counter.packets), str(counter.bytes))
        parts += ["", rules]
    if stats.hosts:
        hosts = _table("HOST", "LAST REPORT")
        for host, reported_at in sorted(stats.hosts.items()):
            hosts.add_row(host, reported_at)
        parts += ["", hosts]
    else:
        parts += ["", "no agent has reported counters yet"]
    render(*parts)


# --- ports ---


def port_addresses(port: PortV1Out) -> list[str]:
    return [ip["ip_address"] for ip in port.get("fixed_ips", [])]


def show_port(port: PortV1Out) -> None:
    """A port as the v1 API answers it."""
    show_fields(
        [
            ("id", port["id"]),
            ("host", port["binding:host_id"]),
            ("device", port["name"]),
            ("mac", port.get("mac_address") or ""),
            ("addresses", "\n".join(port_addresses(port))),
            ("status", port.get("status") or ""),
        ]
    )


def show_created_port(port: Port) -> None:
    """A port as the internal API answers its creation."""
    show_fields(
        [
            ("id", port.id),
            ("host", port.host),
            ("device", port.device),
            ("mac", port.mac or ""),
            ("addresses", "\n".join((*port.ipv4, *port.ipv6))),
        ]
    )


def list_ports(ports: Sequence[PortV1Out]) -> None:
    table = _table("ID", "HOST", "DEVICE", "MAC", "ADDRESSES", "STATUS")
    for port in ports:
        table.add_row(
            port["id"],
            port["binding:host_id"],
            port["name"],
            port.get("mac_address") or "",
            ", ".join(port_addresses(port)),
            port.get("status") or "",
        )
    render(table)


def show_fields(rows: Sequence[tuple[str, str]]) -> None:
    """`name  value` lines, for one object in detail."""
    render(_fields(rows))


def columns(*names: str) -> Table:
    """An empty table with these column headers, styled as every list of the CLI."""
    return _table(*names)


def done(message: str) -> None:
    click.echo(message)


# --- target groups ---


def table_shares(healthy_port_ids: Iterable[str]) -> dict[str, float]:
    """Each healthy member's share of the placement table, in percent (slots / 65,537):
    the part of the flows it receives (`vxtap.dataplane.placement`); {} without one."""
    from vxtap.dataplane import placement  # the table costs ~10-30 ms: only when shown

    members = sorted(set(healthy_port_ids))
    if not members:
        return {}
    table = placement.build_table(members)
    slots = len(table.slots)
    return {member: 100.0 * count / slots for member, count in table.shares().items()}
