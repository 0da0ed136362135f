"""`vxtap lab`: replay a whole traffic-mirroring scenario in network namespaces."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import click

from vxtap.cli._api import OneLineErrorGroup
from vxtap.lab.runtime import DEFAULT_LAB_DIR

if TYPE_CHECKING:
    from vxtap.lab.lab import Lab

T = TypeVar("T")

DIR_OPTION = click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=lambda: os.environ.get("VXTAP_LAB_DIR", str(DEFAULT_LAB_DIR)),
    show_default=f"$VXTAP_LAB_DIR or {DEFAULT_LAB_DIR}",
    help="Where the lab keeps its records, logs and captures.",
)


def _scenario_names() -> list[str]:
    from vxtap.lab.scenario import SCENARIOS

    return sorted(SCENARIOS)


SCENARIO = click.argument("scenario", metavar="SCENARIO", type=click.Choice(_scenario_names()))


def _break_names() -> list[str]:
    from vxtap.lab.scenario import BREAKS

    return sorted(BREAKS)


BREAK_OPTION = click.option(
    "--break",
    "breaks",
    multiple=True,
    type=click.Choice(_break_names()),
    help="Deploy the scenario broken on purpose (repeatable): wrong-rule = accept rules "
    "look at the wrong port, no-4789 = the target's security group lacks VXLAN, "
    "disabled = sessions disabled. `verify` then fails and says why.",
)


def _lab(directory: Path) -> Lab:
    if os.geteuid() != 0:
        raise click.ClickException("the lab creates network namespaces: run it as root")
    from vxtap.lab.lab import Lab

    return Lab(directory, say=lambda line: click.echo(line))


def _guarded(action: Callable[[], T]) -> T:
    from vxtap.lab.runtime import LabError

    try:
        return action()
    except LabError as error:
        raise click.ClickException(str(error)) from None


@click.group(cls=OneLineErrorGroup)
def lab() -> None:
    """Replay whole scenarios (servers, security groups, mirror sessions) in
    network namespaces, and check that exactly the right packets arrive."""


@lab.command()
@SCENARIO
@BREAK_OPTION
@DIR_OPTION
def up(scenario: str, breaks: tuple[str, ...], directory: Path) -> None:
    """Build SCENARIO's VPC and servers, start vxtap, create its sessions."""
    from vxtap.lab.runtime import LabError
    from vxtap.lab.scenario import get

    try:
        _lab(directory).up(get(scenario), breaks)
    except LabError as error:
        raise click.ClickException(
            f"{error}\n(what was built is still up for a look; 'vxtap lab down' removes it)"
        ) from None


@lab.command()
@SCENARIO
@DIR_OPTION
def verify(scenario: str, directory: Path) -> None:
    """Send SCENARIO's traffic, capture on the targets, check every expectation."""
    from vxtap.lab.scenario import get

    report = _guarded(lambda: _lab(directory).verify(get(scenario)))
    if not report.passed:
        raise SystemExit(1)


@lab.command()
@DIR_OPTION
def down(directory: Path) -> None:
    """Stop everything the lab started and remove its namespaces."""
    _lab(directory).down()


@lab.command()
@SCENARIO
@BREAK_OPTION
@DIR_OPTION
def run(scenario: str, breaks: tuple[str, ...], directory: Path) -> None:
    """up, verify, down (down always)."""
    from vxtap.lab.scenario import get

    report = _guarded(lambda: _lab(directory).run(get(scenario), breaks))
    if not report.passed:
        raise SystemExit(1)


@lab.command()
@click.argument(
    "scenario", metavar="[SCENARIO]", type=click.Choice(_scenario_names()), required=False
)
def show(scenario: str | None) -> None:
    """Describe SCENARIO (or list them all): servers, sessions, traffic, expectations."""
    from vxtap.lab.scenario import SCENARIOS, describe

    if scenario is None:
        for name in sorted(SCENARIOS):
            click.echo(f"{name}: {SCENARIOS[name].summary}")
        return
    click.echo("\n".join(describe(SCENARIOS[scenario])))
