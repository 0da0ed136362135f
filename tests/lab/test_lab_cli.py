from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from vxtap.cli import main

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root")


def test_verify_without_a_lab_says_so(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["lab", "verify", "seed", "--dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "no lab is up: run 'vxtap lab up SCENARIO' first" in result.output


def test_unknown_scenario_and_break_are_refused_naming_the_choices(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["lab", "run", "nope", "--dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "'multi-session', 'reject-rules', 'seed', 'two-targets'" in result.output
    result = CliRunner().invoke(
        main, ["lab", "run", "seed", "--break", "x", "--dir", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "'disabled', 'no-4789', 'wrong-rule'" in result.output
    assert not (tmp_path / "lab.json").exists()


def test_down_with_nothing_up_is_quiet_and_succeeds(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["lab", "down", "--dir", str(tmp_path / "none")])
    assert result.exit_code == 0, result.output
    assert result.output == ""


def test_show_lists_and_describes_scenarios() -> None:
    listing = CliRunner().invoke(main, ["lab", "show"])
    assert listing.exit_code == 0
    assert [line.split(":")[0] for line in listing.output.splitlines()] == [
        "elb",
        "multi-session",
        "reject-rules",
        "seed",
        "two-targets",
    ]
    seed = CliRunner().invoke(main, ["lab", "show", "seed"]).output
    assert (
        "ingress priority 1 accept IPv4 TCP, src 192.168.0.161/32, dst 192.168.0.230/32, "
        "dport 1234-1234" in seed
    )
    assert "seed-session: ECS-source/eth0 -> ECS-target/eth0" in seed
    assert "ECS-source: nc -l 1234; ECS-test: nc 192.168.0.230 1234, types hello / 12345" in seed


def test_down_removes_only_the_labs_own_files(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("the user's")
    (tmp_path / "lab.json").write_text("{}")
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "server.log").write_text("log")
    result = CliRunner().invoke(main, ["lab", "down", "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious.txt"]
