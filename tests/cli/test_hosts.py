"""`vxtap host add|remove|list|show` against a real `vxtap server` over HTTPS."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from vxtap.auth import load_credentials
from vxtap.cli import main
from vxtap.client import VxtapClient
from vxtap.lab.certificates import TlsFiles

ENV_NAMES = (
    "VXTAP_ENDPOINT", "VXTAP_AK", "VXTAP_SK", "VXTAP_PROJECT_ID", "VXTAP_CREDENTIALS",
    "VXTAP_CA_BUNDLE",
)  # fmt: skip


@pytest.fixture
def server(
    tmp_path: Path, tls_files: TlsFiles, api_server_factory: Callable[..., Any]
) -> Iterator[Any]:
    started = api_server_factory(tmp_path / "server", tls=tls_files)
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
def run(server: Any, tls_files: TlsFiles) -> Callable[..., tuple[int, str, str]]:
    env: dict[str, str | None] = dict.fromkeys(ENV_NAMES)
    env.update(
        VXTAP_ENDPOINT=server.endpoint,
        VXTAP_CREDENTIALS=str(server.credentials_path),
        VXTAP_CA_BUNDLE=str(tls_files.ca),
    )

    def invoke(*args: str, credentials: Path | None = None) -> tuple[int, str, str]:
        extra = {} if credentials is None else {"VXTAP_CREDENTIALS": str(credentials)}
        result = CliRunner().invoke(main, list(args), env={**env, **extra}, prog_name="vxtap")
        return result.exit_code, result.stdout, result.stderr

    return invoke


def test_enrol_list_show_and_remove(
    run: Callable[..., tuple[int, str, str]], server: Any, tls_files: TlsFiles, tmp_path: Path
) -> None:
    file = tmp_path / "web-1.json"
    code, out, err = run("host", "add", "web-1", "--output", str(file))
    assert code == 0, err
    assert "enrolled host web-1" in out and str(file) in out
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    [credential] = load_credentials(file).values()
    assert (credential.host, credential.project_id) == ("web-1", server.project_id)
    # Never over an existing file; a second enrolment of one host is refused.
    code, _, err = run("host", "add", "web-2", "--output", str(file))
    assert code == 1 and "exists already" in err
    code, _, err = run("host", "add", "web-1", "--output", str(tmp_path / "again.json"))
    assert code == 1 and err.startswith("error: VPC.2904: host web-1 is enrolled already")
    assert not (tmp_path / "again.json").exists()

    # The agent key reports what it applied; the fleet view shows it in sync.
    with VxtapClient(
        server.endpoint, credential.ak, credential.sk, credential.project_id, ca_bundle=tls_files.ca
    ) as agent:
        revision = agent.desired_state("web-1").revision
        agent.report_status(
            "web-1", agent_version="0.1.0", applied_revision=revision, apply_error=None,
            drift_repairs=1,
        )  # fmt: skip
    code, out, err = run("host", "list", "--json")
    assert code == 0, err
    [listed] = json.loads(out)
    assert listed["host"] == "web-1"
    assert (listed["sync"], listed["applied_revision"], listed["drift_repairs"]) == (
        "in sync", revision, 1
    )  # fmt: skip
    code, out, _ = run("host", "show", "web-1", "--json")
    assert json.loads(out) == listed
    code, out, _ = run("host", "list")
    assert code == 0
    header, row = out.splitlines()
    assert header.split()[:3] == ["HOST", "SYNC", "DESIRED"]
    assert row.split()[:5] == ["web-1", "in", "sync", revision, revision]
    code, out, _ = run("host", "show", "web-1")
    assert "sync              in sync" in out and "held request      none" in out

    # The agent's own key cannot use the fleet commands.
    code, _, err = run("host", "list", credentials=file)
    assert code == 1 and "VPC.0007" in err and "agent key" in err

    code, out, _ = run("host", "remove", "web-1")
    assert (code, out.strip()) == (0, "revoked host web-1")
    code, _, err = run("host", "show", "web-1")
    assert code == 1 and "VPC.0003" in err
    code, _, err = run("host", "remove", "web-1")
    assert code == 1 and "not enrolled" in err
    code, out, _ = run("host", "list", "--json")
    assert json.loads(out) == []


def test_a_credential_file_others_can_read_is_refused(
    run: Callable[..., tuple[int, str, str]], tmp_path: Path
) -> None:
    file = tmp_path / "web-3.json"
    assert run("host", "add", "web-3", "--output", str(file))[0] == 0
    os.chmod(file, 0o644)
    code, _, err = run("host", "list", credentials=file)
    assert code == 1
    assert "is accessible by others (mode 0644)" in err and "chmod 600" in err
