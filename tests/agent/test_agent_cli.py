"""`vxtap agent`'s input checks: one clear line, before anything touches the kernel."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from vxtap.cli import main
from vxtap.cli.agent import _endpoint, agent


@pytest.fixture
def credentials(tmp_path: Path) -> Path:
    path = tmp_path / "credentials.json"
    path.write_text(json.dumps([{"ak": "a", "sk": "s", "project_id": "p"}]))
    path.chmod(0o600)
    return path


def run(tmp_path: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["agent", "--state-dir", str(tmp_path / "state"), *args])
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "error: --endpoint URL is required (or set VXTAP_ENDPOINT)"),
        (["--endpoint", "10.0.0.1:9696"], "error: --endpoint '10.0.0.1:9696' is not an http://"),
        (["--server", "10.0.0.1:9696"], "error: --server '10.0.0.1:9696' is not an http://"),
        (["--endpoint", "http://h:1"], "error: --credentials FILE is required"),
        (["--endpoint", "http://h:1", "--credentials", "/nonexistent.json"],
         "error: cannot read credentials file /nonexistent.json"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    monkeypatch.delenv("VXTAP_ENDPOINT", raising=False)
    monkeypatch.delenv("VXTAP_CREDENTIALS", raising=False)
    code, output = run(tmp_path, *args)
    assert code == 1 and output.startswith(message) and output.count("\n") == 1, output


def test_bad_metrics_address(tmp_path: Path, credentials: Path) -> None:
    code, output = run(
        tmp_path, "--endpoint", "http://h:1", "--credentials", str(credentials), "--metrics", "9697"
    )
    assert (code, output) == (
        1, "error: --metrics '9697' is not ADDRESS:PORT, e.g. 127.0.0.1:9697\n",
    )  # fmt: skip


def test_corrupt_saved_state_is_named(tmp_path: Path, credentials: Path) -> None:
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "desired-state.json").write_text("{}")
    code, output = run(tmp_path, "--endpoint", "http://h:1", "--credentials", str(credentials))
    assert code == 1
    assert "desired-state.json is not a saved desired state" in output
    assert "run 'vxtap agent --cleanup'" in output and output.count("\n") == 1


def test_missing_prerequisites_are_named(
    tmp_path: Path, credentials: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no nft, ethtool or ip
    code, output = run(tmp_path, "--endpoint", "http://h:1", "--credentials", str(credentials))
    assert code == 1
    assert output.startswith("error: missing kernel prerequisites: ")
    assert "the nft command (package nftables)" in output


def test_the_agent_process_does_not_import_pyroute2() -> None:
    """pyroute2 cost the agent ~10 MiB of resident memory; the data plane speaks the few
    netlink messages it needs itself (docs/agent.md, memory)."""
    modules = (
        "vxtap.cli.agent",
        "vxtap.agent.main",
        "vxtap.agent.daemon",
        "vxtap.agent.interfaces",
        "vxtap.agent.metrics",
        "vxtap.agent.statefile",
        "vxtap.dataplane.kernel",
        "vxtap.dataplane.plan",
    )
    code = f"import sys\nfor m in {modules!r}: __import__(m)\nprint('pyroute2' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_an_agent_key_serves_its_own_host_name_only(tmp_path: Path) -> None:
    path = tmp_path / "web-1.credentials.json"
    path.write_text(json.dumps([{"ak": "a", "sk": "s", "project_id": "p", "host": "web-1"}]))
    path.chmod(0o600)
    code, output = run(
        tmp_path, "--endpoint", "http://h:1", "--credentials", str(path), "--host-name", "web-2"
    )
    assert code == 1
    assert output.strip() == (
        f"error: --host-name web-2 is not the host of the credential in {path} (web-1): "
        "an agent key serves its own host only"
    )
    code, output = run(
        tmp_path, "--endpoint", "https://h:1", "--credentials", str(path), "--cacert", "/no/ca.pem"
    )
    assert (code, output) == (1, "error: CA bundle /no/ca.pem does not exist\n")
    path.chmod(0o644)
    code, output = run(tmp_path, "--endpoint", "http://h:1", "--credentials", str(path))
    assert code == 1 and "is accessible by others (mode 0644)" in output


def test_server_is_a_hidden_alias_of_endpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--server` was the option's name before every command said `--endpoint`: it still
    works as a flag and as a config file key, and --help shows only --endpoint."""
    monkeypatch.delenv("VXTAP_ENDPOINT", raising=False)

    def url(*args: str) -> str | None:
        with agent.make_context("agent", list(args)) as ctx:
            return _endpoint(ctx.params["endpoint"], ctx.params["server"])[0]

    help_text = CliRunner().invoke(main, ["agent", "--help"]).output
    assert "--endpoint" in help_text and "--server" not in help_text
    config = tmp_path / "agent.toml"
    config.write_text('server = "http://from-file:1"\n')
    assert url("--config", str(config)) == "http://from-file:1"
    assert url("--server", "http://old:1") == "http://old:1"
    # A flag beats the environment, whichever name it has; --endpoint wins a tie.
    monkeypatch.setenv("VXTAP_ENDPOINT", "http://env:1")
    assert url("--server", "http://old:1") == "http://old:1"
    assert url("--config", str(config)) == "http://env:1"
    assert url("--server", "http://old:1", "--endpoint", "http://new:1") == "http://new:1"
    # And the agent runs with it: the next check (credentials) is reached.
    monkeypatch.delenv("VXTAP_CREDENTIALS", raising=False)
    code, output = run(tmp_path, "--server", "http://h:1")
    assert (code, output) == (
        1, "error: --credentials FILE is required (or set VXTAP_CREDENTIALS)\n",
    )  # fmt: skip
