"""The `vxtap` command.

Each subcommand lives in its own module and is imported only when it runs, so
`vxtap collect` does not pay for the API server's imports and vice versa.
"""

from __future__ import annotations

import importlib

import click

# name -> ("module:attribute" of a click command or group, one-line help).
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "server": ("vxtap.cli.server:server", "Run the traffic-mirroring API server."),
    "filter": ("vxtap.cli.resources:filter_group", "Mirror filters."),
    "rule": ("vxtap.cli.resources:rule_group", "Mirror filter rules."),
    "session": ("vxtap.cli.resources:session_group", "Mirror sessions."),
    "port": (
        "vxtap.cli.resources:port_group",
        "Ports: the interfaces sessions mirror from and to.",
    ),
    "host": ("vxtap.cli.hosts:host_group", "Enrol, revoke and watch the agents' hosts."),
    "agent": ("vxtap.cli.agent:agent", "Run the host agent that programs the kernel."),
    "explain": ("vxtap.cli.explain:explain", "Explain which session mirrors a packet, and why."),
    "collect": ("vxtap.cli.collect:collect", "Receive, show, count and store mirrored traffic."),
    "lab": ("vxtap.cli.lab:lab", "Replay whole scenarios in network namespaces."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = SUBCOMMANDS.get(cmd_name)
        if entry is None:
            return None
        module_name, attribute = entry[0].split(":")
        command = getattr(importlib.import_module(module_name), attribute)
        assert isinstance(command, click.Command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # From the registry, so that --help imports none of the subcommands.
        with formatter.section("Commands"):
            formatter.write_dl([(name, SUBCOMMANDS[name][1]) for name in self.list_commands(ctx)])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="vxtap")
def main() -> None:
    """Self-hosted VPC traffic mirroring for Linux."""
