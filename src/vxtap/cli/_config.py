"""Configuration files for the long-running commands: `/etc/vxtap/<part>.toml`.

One precedence for every setting (docs/deploy.md, "Configuration"):

    flag  >  environment variable  >  config file  >  built-in default

A file's keys are the command's long option names without the dashes
(`listen = "0.0.0.0:9696"`, `log-level = "debug"`, `vni = [1, 2]`); each option
also reads `VXTAP_<PART>_<OPTION>` (`VXTAP_SERVER_LISTEN`, `VXTAP_SERVER_DB`),
unless it names its own variable (`--endpoint`: `VXTAP_ENDPOINT`). The file is read by an eager
`--config` option that fills click's `default_map`, which click consults after
the command line and the environment, before the defaults. A missing file at
the default path is fine (flags and environment suffice); a missing file named
with `--config`, an unknown key or bad TOML is an error naming the file.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

CONFIG_DIR = Path("/etc/vxtap")
_NOT_SETTINGS = {"config", "help"}

F = TypeVar("F", bound=Callable[..., Any])


def settings(command: click.Command) -> dict[str, str]:
    """A config file's keys for `command`: long option name without dashes -> parameter."""
    found: dict[str, str] = {}
    for param in command.params:
        if not isinstance(param, click.Option) or param.name is None:
            continue
        for opt in param.opts + param.secondary_opts:
            if opt.startswith("--") and opt[2:] not in _NOT_SETTINGS:
                found.setdefault(opt[2:], param.name)
                break
    return found


def read_config(path: Path, command: click.Command) -> dict[str, Any]:
    """The file's settings as click's default_map; ClickException naming what is wrong."""
    try:
        data = tomllib.loads(path.read_text())
    except OSError as error:
        raise click.ClickException(f"cannot read config file {path}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise click.ClickException(f"config file {path} is not TOML: {error}") from None
    known = settings(command)
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise click.ClickException(
            f"config file {path}: unknown setting {unknown[0]!r} "
            f"(the settings are: {', '.join(sorted(known))})"
        )
    return {known[key]: value for key, value in data.items()}


def config_option(part: str) -> Callable[[F], F]:
    """`--config FILE` (default /etc/vxtap/<part>.toml, env VXTAP_<PART>_CONFIG) and the
    `VXTAP_<PART>_*` environment variables for a command; put it right below
    `@click.command` so that it sees every option."""
    default = CONFIG_DIR / f"{part}.toml"

    def load(ctx: click.Context, param: click.Parameter, value: Path | None) -> None:
        if value is None:
            if not default.exists():
                return
            value = default
        assert ctx.command is not None
        ctx.default_map = {**(ctx.default_map or {}), **read_config(value, ctx.command)}

    def decorate(function: F) -> F:
        # The options declared so far (all of them, when this decorator is the outermost
        # after click.command) read VXTAP_<PART>_<OPTION> unless they name a variable.
        for param in getattr(function, "__click_params__", []):
            if isinstance(param, click.Option) and param.envvar is None:
                long = next((o for o in param.opts if o.startswith("--")), None)
                if long is not None:
                    param.envvar = f"VXTAP_{part.upper()}_{long[2:].upper().replace('-', '_')}"
                    param.show_envvar = True
        return click.option(
            "--config",
            type=click.Path(dir_okay=False, path_type=Path),
            envvar=f"VXTAP_{part.upper()}_CONFIG",
            show_envvar=True,
            is_eager=True,
            expose_value=False,
            callback=load,
            help=f"TOML settings [default: {default} if it exists]. "
            "Flags and environment variables win over it.",
        )(function)

    return decorate
