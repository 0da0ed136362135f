"""`vxtap session ...`: mirror sessions, their sources and their counters.

Thin: each command turns its options into one `VxtapClient` call and prints the
answer with `out.emit` (docs/cli.md). Ports may be named HOST/DEVICE
(`vxtap.cli.ports.PortDirectory` resolves them to ids).
"""

from __future__ import annotations

from collections.abc import Sequence

import click

from vxtap.cli import _output as out
from vxtap.cli._api import CliError, OneLineErrorGroup, connection_options, list_items, where
from vxtap.cli.ports import PORT_HELP, PortDirectory
from vxtap.client import VxtapClient
from vxtap.wire.answers import SessionOut


def _target(
    ports: PortDirectory, target: str | None, target_group: str | None, *, required: bool = True
) -> tuple[str | None, str | None]:
    """The target's id and type from --target (a port) or --target-group."""
    if target is not None and target_group is not None:
        raise CliError("give --target (a port) or --target-group, not both")
    if target_group is not None:
        return target_group, "elb"
    if target is not None:
        return ports.resolve(target), "eni"
    if required:
        raise CliError("give --target (a port) or --target-group")
    return None, None


def group_names(client: VxtapClient, sessions: Sequence[SessionOut]) -> dict[str, str]:
    """The names of the target groups `elb` sessions mirror to, by id (for tables)."""
    if not any(s["traffic_mirror_target_type"] == "elb" for s in sessions):
        return {}
    return {g["id"]: g["name"] for g in client.iter_target_groups()}


@click.group("session", cls=OneLineErrorGroup)
def session_group() -> None:
    """Mirror sessions: a filter, sources, a target, a VNI."""


def _print_session(client: VxtapClient, session: SessionOut, as_json: bool) -> None:
    def show(session: SessionOut) -> None:
        # Names for the table only: --json prints the server's object unchanged.
        filter_id = session["traffic_mirror_filter_id"]
        filter_names = {filter_id: client.show_filter(filter_id)["name"]}
        names = {**PortDirectory(client).names(), **group_names(client, [session])}
        out.show_session(session, names, filter_names)

    out.emit(session, as_json, show)


@session_group.command("create")
@click.argument("name")
@click.option("--filter", "filter_id", required=True, help="The mirror filter's id.")
@click.option("--source", "sources", multiple=True, required=True, help=f"Repeatable; {PORT_HELP}.")
@click.option("--target", help=f"Where mirrored packets go; {PORT_HELP}.")
@click.option(
    "--target-group", help="Or: a target group's id, whose members share the flows (elb)."
)
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
    target: str | None,
    target_group: str | None,
    priority: int,
    vni: int | None,
    packet_length: int | None,
    enabled: bool | None,
    description: str | None,
) -> None:
    """Create a mirror session called NAME."""
    ports = PortDirectory(client)
    target_id, target_type = _target(ports, target, target_group)
    assert target_id is not None and target_type is not None
    session = client.create_session(
        name,
        filter_id=filter_id,
        sources=ports.resolve_all(sources),
        target_id=target_id,
        target_type=target_type,
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
    wanted = where(
        name=name,
        traffic_mirror_filter_id=filter_id,
        traffic_mirror_target_id=None if target is None else ports.resolve(target),
        virtual_network_id=vni,
        enabled=enabled,
    )
    sessions = list_items(
        client.iter_sessions, client.list_sessions, wanted, limit=limit, marker=marker
    )

    def show(sessions: list[SessionOut]) -> None:
        filter_names = {f["id"]: f["name"] for f in client.iter_filters()}
        out.list_sessions(
            sessions, {**ports.names(), **group_names(client, sessions)}, filter_names
        )

    out.emit(sessions, as_json, show)


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
@click.option("--target-group", help="A target group's id (the session then mirrors to it).")
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
    target_group: str | None,
    priority: int | None,
    vni: int | None,
    packet_length: int | None,
    enabled: bool | None,
) -> None:
    """Change a session (not its sources).

    Sources change with `vxtap session add-sources` / `remove-sources`.
    """
    changes = (name, description, filter_id, target, target_group, priority, vni,
               packet_length, enabled)  # fmt: skip
    if all(v is None for v in changes):
        raise CliError("nothing to update: give at least one option (see --help)")
    target_id, target_type = _target(PortDirectory(client), target, target_group, required=False)
    session = client.update_session(
        session_id,
        name=name,
        description=description,
        filter_id=filter_id,
        target_id=target_id,
        target_type=target_type,
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
    """Mirrored packets and bytes per session, rule and target-group member.

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
        members = {k: c for k, c in stats.members.items() if k.partition("/")[0] in session_ids}
        stats = stats.model_copy(update={"sessions": kept, "rules": rules, "members": members})
    else:
        sessions = list(client.iter_sessions())
    out.emit(stats, as_json, lambda stats: out.show_stats(stats, sessions))
