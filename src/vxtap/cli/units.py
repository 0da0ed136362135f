"""`vxtap install-units`: the systemd units shipped in the package, pointed at this
installation's `vxtap` executable, and example config files where none exist."""

from __future__ import annotations

import os
import shutil
import sys
from importlib import resources
from pathlib import Path

import click

from vxtap.cli._api import CliError
from vxtap.cli._config import CONFIG_DIR

UNITS = (
    "vxtap-server.service",
    "vxtap-agent.service",
    "vxtap-collect.service",
    "vxtap-collect@.service",
)
CONFIG_EXAMPLES = ("server.toml", "agent.toml", "collect.toml")
PLACEHOLDER = "@VXTAP@"


def shipped(name: str) -> str:
    return (resources.files("vxtap") / "systemd" / name).read_text()


def installed_executable() -> Path:
    """The `vxtap` script of the environment this Python runs in (a virtual environment's
    bin/, or pipx's), else the first on PATH."""
    beside = Path(sys.executable).parent / "vxtap"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("vxtap")
    if found is None:
        raise CliError(f"no vxtap executable next to {sys.executable} or on PATH: use --executable")
    return Path(found).absolute()


def render(unit: str, executable: Path) -> str:
    """The unit with `executable` in ExecStart (systemd expands % itself: escaped)."""
    text = str(executable)
    if not executable.is_absolute() or any(c.isspace() or c in "\"'\\" for c in text):
        raise CliError(
            f"{text!r}: the executable must be an absolute path without blanks or quotes"
        )
    return unit.replace(PLACEHOLDER, text.replace("%", "%%"))


@click.command("install-units")
@click.option(
    "--dest",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/etc/systemd/system"),
    show_default=True,
    help="Directory the unit files are written to (replacing vxtap's own units there).",
)
@click.option(
    "--config-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=CONFIG_DIR,
    show_default=True,
    help="Where example server/agent/collect.toml files are written if absent.",
)
@click.option(
    "--executable",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The vxtap executable the units run [default: this installation's].",
)
def install_units(dest: Path, config_dir: Path, executable: Path | None) -> None:
    """Install the systemd units (server, agent, collect, collect@IFACE) for this installation.

    Then: systemctl daemon-reload; systemctl enable --now vxtap-agent (or another).
    """
    executable = (executable or installed_executable()).absolute()
    units = {name: render(shipped(name), executable) for name in UNITS}
    try:
        dest.mkdir(parents=True, exist_ok=True)
        for name, text in units.items():
            (dest / name).write_text(text)
            (dest / name).chmod(0o644)
            click.echo(f"wrote {dest / name}")
        config_dir.mkdir(parents=True, exist_ok=True)
        for name in CONFIG_EXAMPLES:
            if not (config_dir / name).exists():
                (config_dir / name).write_text(shipped(name))
                click.echo(f"wrote {config_dir / name} (an example: edit it)")
    except OSError as error:
        raise CliError(f"cannot write {error.filename}: {error.strerror}") from None
    click.echo("next: systemctl daemon-reload, then systemctl enable --now vxtap-<part>")
