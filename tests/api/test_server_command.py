"""`vxtap server` itself: defaults in the state directory, and clear start-up errors."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from huaweicloudsdkvpc.v3 import ListTrafficMirrorFiltersRequest

from support.api import vpc_client


def vxtap(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vxtap", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_start_up_errors_are_one_clear_line(tmp_path: Path) -> None:
    credentials = tmp_path / "c.json"
    credentials.write_text("[]")
    credentials.chmod(0o600)
    for args, expected in [
        (["--listen", "nonsense"], "is not HOST:PORT"),
        (["--credentials", str(tmp_path / "missing.json")], "cannot read credentials file"),
        (["--credentials", str(credentials), "--db", "mysql://h/db"], "unsupported database URL"),
    ]:
        result = vxtap("server", *args)
        assert result.returncode != 0
        assert expected in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


def test_defaults_live_in_the_state_directory(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "vxtap", "server", "--listen", f"127.0.0.1:{port}"],
        env={**os.environ, "VXTAP_STATE_DIR": str(state)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.05)
        credentials_file = state / "credentials.json"
        assert (state / "vxtap.db").exists()
        assert oct(credentials_file.stat().st_mode & 0o777) == "0o600"
        [key] = json.loads(credentials_file.read_text())
        vpc = vpc_client(f"http://127.0.0.1:{port}", key["ak"], key["sk"], key["project_id"])
        listed = vpc.list_traffic_mirror_filters(ListTrafficMirrorFiltersRequest())
        assert listed.traffic_mirror_filters == []
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=10)
    assert b"created credentials file" in stderr
