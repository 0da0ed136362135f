"""`vxtap lab`: replay a whole traffic-mirroring scenario in network namespaces."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import click

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


SCENARIO = click.argument("scenario", type=click.Choice(_scenario_names()))


def _lab(directory: Path) -> Lab:
    if os.geteuid() != 0:
        raise click.ClickException("the lab creates network namespaces: run it as root")
    from vxtap.lab.lab import Lab

    return Lab(directory, say=lambda line: click.echo(line))


def _guarded(action: Callable[[], T]) -> T:
    from vxtap.lab.control import LabError

    try:
        return action()
    except LabError as error:
        raise click.ClickException(str(error)) from None


@click.group()
def lab() -> None:
    """Replay whole scenarios (servers, security groups, mirror sessions) in
    network namespaces, and check that exactly the right packets arrive."""


@lab.command()
@SCENARIO
@DIR_OPTION
def up(scenario: str, directory: Path) -> None:
    """Build SCENARIO's VPC and servers, start vxtap, create its sessions."""
    from vxtap.lab.scenario import get

    _guarded(lambda: _lab(directory).up(get(scenario)))


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
@DIR_OPTION
def run(scenario: str, directory: Path) -> None:
    """up, verify, down (down always)."""
    from vxtap.lab.scenario import get

    report = _guarded(lambda: _lab(directory).run(get(scenario)))
    if not report.passed:
        raise SystemExit(1)
