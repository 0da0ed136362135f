"""vxtap.logs: one line per event, as text or JSON; tracebacks only when asked."""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from vxtap.logs import setup_logging
from vxtap.store.db import Store, code_schema_revision


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def log_failure(level: str, log_format: str) -> str:
    stream = io.StringIO()
    setup_logging("vxtap-test", level, log_format, stream)  # type: ignore[arg-type]
    log = logging.getLogger("vxtap.test")
    log.info("first line\nsecond line")
    try:
        raise ValueError("bad value\nwith a second line")
    except ValueError:
        log.exception("it failed")
    return stream.getvalue()


def test_text_is_one_line_per_event_without_a_traceback(restore_logging: None) -> None:
    lines = log_failure("info", "text").splitlines()
    assert len(lines) == 2
    assert lines[0].endswith(" vxtap-test INFO first line\\nsecond line")
    assert lines[1].endswith(
        " vxtap-test ERROR it failed [ValueError: bad value\\nwith a second line]"
    )


def test_debug_adds_the_traceback_on_the_same_line(restore_logging: None) -> None:
    lines = log_failure("debug", "text").splitlines()
    assert len(lines) == 2
    assert "[ValueError: bad value" in lines[1] and "Traceback (most recent call last):" in lines[1]


def test_json_is_one_object_per_line(restore_logging: None) -> None:
    first, second = map(json.loads, log_failure("info", "json").splitlines())
    assert first["message"] == "first line\nsecond line"
    assert (first["level"], first["program"], first["logger"]) == (
        "info",
        "vxtap-test",
        "vxtap.test",
    )
    assert first["time"].endswith("Z") and "exception" not in first
    assert second["exception"] == "ValueError: bad value\nwith a second line"
    assert second["traceback"].startswith("Traceback (most recent call last):")


def test_the_server_logs_json_lines_from_start_to_stop(tmp_path: Path) -> None:
    """Its own, uvicorn's and the migration's lines alike (a database behind is upgraded)."""
    url = f"sqlite:///{tmp_path / 'vxtap.db'}"
    store = Store(url)
    store.upgrade("0001")
    store.dispose()
    credentials = tmp_path / "credentials.json"
    credentials.write_text('[{"ak": "AK1", "sk": "SK1", "project_id": "p1"}]')
    credentials.chmod(0o600)  # the server refuses a credentials file others can read
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "vxtap", "server", "--listen", f"127.0.0.1:{port}", "--db", url,
         "--credentials", str(credentials), "--migrate"],
        stderr=subprocess.PIPE, text=True,
        env={**os.environ, "VXTAP_SERVER_LOG_FORMAT": "json"},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and process.poll() is None:
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.05)
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=15)
    events = [json.loads(line) for line in stderr.splitlines()]
    messages = [event["message"] for event in events]
    assert f"upgraded the database schema from 0001 to {code_schema_revision()}" in messages
    assert any(m.startswith("Uvicorn running on") for m in messages)
    assert {event["program"] for event in events} == {"vxtap-server"}
