"""One precedence for every setting of server, agent and collect:
flag > environment variable > config file > default (docs/deploy.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import pytest

from vxtap.cli.agent import agent
from vxtap.cli.collect import collect
from vxtap.cli.server import server


def resolved(command: click.Command, *args: str) -> dict[str, Any]:
    """The values the command would run with (parsed and converted, not run)."""
    with command.make_context(command.name or "", list(args)) as ctx:
        return dict(ctx.params)


@pytest.fixture(autouse=True)
def no_vxtap_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in [n for n in os.environ if n.startswith("VXTAP_")]:
        monkeypatch.delenv(name)


CASES = [
    (server, "server", "listen", "--listen", '"10.0.0.1:1"', "10.0.0.2:2", "10.0.0.3:3",
     "127.0.0.1:9696"),
    (agent, "agent", "metrics_at", "--metrics", '"127.0.0.1:1"', "127.0.0.1:2", "127.0.0.1:3",
     None),
    (collect, "collect", "ring_mb", "--ring-mb", "8", "16", "32", 64),
]  # fmt: skip


@pytest.mark.parametrize(
    ("command", "part", "param", "flag", "in_file", "in_env", "on_line", "default"), CASES
)
def test_flag_beats_env_beats_file_beats_default(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    command: click.Command,
    part: str,
    param: str,
    flag: str,
    in_file: str,
    in_env: str,
    on_line: str,
    default: object,
) -> None:
    assert resolved(command)[param] == default
    config = tmp_path / f"{part}.toml"
    config.write_text(f"{flag[2:]} = {in_file}\n")
    monkeypatch.setenv(f"VXTAP_{part.upper()}_CONFIG", str(config))
    expected_from_file = in_file.strip('"')
    got = resolved(command)[param]
    assert str(got) == expected_from_file
    monkeypatch.setenv(f"VXTAP_{part.upper()}_{flag[2:].upper().replace('-', '_')}", in_env)
    assert str(resolved(command)[param]) == in_env
    assert str(resolved(command, flag, on_line)[param]) == on_line
    # --config on the command line names the file too
    monkeypatch.delenv(f"VXTAP_{part.upper()}_CONFIG")
    monkeypatch.delenv(f"VXTAP_{part.upper()}_{flag[2:].upper().replace('-', '_')}")
    assert str(resolved(command, "--config", str(config))[param]) == expected_from_file


def test_a_list_setting_and_a_flag(tmp_path: Path) -> None:
    config = tmp_path / "collect.toml"
    config.write_text('vni = [1, 2]\nquiet = true\nrotate-size = "1M"\n')
    params = resolved(collect, "--config", str(config))
    assert (params["vnis"], params["quiet"], params["rotate_size"]) == ((1, 2), True, 1 << 20)


def test_an_own_variable_keeps_its_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VXTAP_ENDPOINT", "http://control:9696")
    assert resolved(agent)["endpoint"] == "http://control:9696"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            "lisen = 1\n",
            "unknown setting 'lisen' (the settings are: agent-key, credentials, db, listen,",
        ),
        ("listen = \n", "is not TOML: "),
    ],
)
def test_a_bad_file_is_named(tmp_path: Path, content: str, message: str) -> None:
    config = tmp_path / "server.toml"
    config.write_text(content)
    with pytest.raises(click.ClickException) as error:
        resolved(server, "--config", str(config))
    assert str(config) in error.value.message and message in error.value.message


def test_a_named_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(click.ClickException, match=r"cannot read config file .*missing\.toml"):
        resolved(server, "--config", str(tmp_path / "missing.toml"))


def test_a_bad_value_from_the_file_is_checked_like_a_flag(tmp_path: Path) -> None:
    config = tmp_path / "collect.toml"
    config.write_text("ring-mb = 1\n")
    with pytest.raises(click.BadParameter, match="1 is not in the range 2<=x<=4096"):
        resolved(collect, "--config", str(config))
