"""The `vxtap` command.

Each subcommand lives in its own module and is imported only when it runs, so
`vxtap collect` does not pay for the API server's imports and vice versa.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import NamedTuple

import click

# The modules each extra of the package brings (pyproject.toml's optional-dependencies).
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "server": ("fastapi", "uvicorn", "sqlalchemy", "alembic"),
    "collector": ("numba", "numpy"),
}
EXTRA_MODULES["all"] = (*EXTRA_MODULES["server"], *EXTRA_MODULES["collector"], "cryptography")


class Subcommand(NamedTuple):
    target: str  # "module:attribute" of a click command or group
    help: str
    extra: str | None = None  # the package extra it needs, checked before importing it


SUBCOMMANDS: dict[str, Subcommand] = {
    "server": Subcommand(
        "vxtap.cli.server:server", "Run the traffic-mirroring API server.", "server"
    ),
    "db": Subcommand("vxtap.cli.db:db", "The server database's schema: status, upgrade.", "server"),
    "filter": Subcommand("vxtap.cli.filters:filter_group", "Mirror filters."),
    "rule": Subcommand("vxtap.cli.rules:rule_group", "Mirror filter rules."),
    "session": Subcommand("vxtap.cli.sessions:session_group", "Mirror sessions."),
    "target-group": Subcommand(
        "vxtap.cli.target_groups:target_group_group",
        "Target groups: collector ports sharing a session's flows.",
    ),
    "port": Subcommand(
        "vxtap.cli.ports:port_group",
        "Ports: the interfaces sessions mirror from and to.",
    ),
    "host": Subcommand("vxtap.cli.hosts:host_group", "Enrol, revoke and watch the agents' hosts."),
    "agent": Subcommand("vxtap.cli.agent:agent", "Run the host agent that programs the kernel."),
    "explain": Subcommand(
        "vxtap.cli.explain:explain", "Explain which session mirrors a packet, and why."
    ),
    "collect": Subcommand(
        "vxtap.cli.collect:collect",
        "Receive, show, count and store mirrored traffic.",
        "collector",
    ),
    "lab": Subcommand("vxtap.cli.lab:lab", "Replay whole scenarios in network namespaces.", "all"),
    "install-units": Subcommand(
        "vxtap.cli.units:install_units", "Install the systemd units for this installation."
    ),
}


def missing_extra(command: str, extra: str) -> str | None:
    """One line saying which extra to install, if a module it brings is missing."""
    absent = [m for m in EXTRA_MODULES[extra] if importlib.util.find_spec(m) is None]
    if not absent:
        return None
    return (
        f"'vxtap {command}' needs the {extra} extra ({', '.join(absent)} not installed): "
        f"pip install 'vxtap[{extra}]'"
    )


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = SUBCOMMANDS.get(cmd_name)
        if entry is None:
            return None
        if entry.extra is not None and (problem := missing_extra(cmd_name, entry.extra)):
            click.echo(f"error: {problem}", err=True)
            ctx.exit(1)
        module_name, attribute = entry.target.split(":")
        command = getattr(importlib.import_module(module_name), attribute)
        assert isinstance(command, click.Command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # From the registry, so that --help imports none of the subcommands.
        with formatter.section("Commands"):
            formatter.write_dl([(name, SUBCOMMANDS[name].help) for name in self.list_commands(ctx)])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="vxtap")
def main() -> None:
    """Self-hosted VPC traffic mirroring for Linux."""
