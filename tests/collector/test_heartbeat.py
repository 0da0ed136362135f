"""The collector's heartbeat thread: its schedule, its log lines, its stop; and the
`vxtap collect` options that turn it on (the server's side: tests/api/test_member_health.py)."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from vxtap.cli._api import CliError
from vxtap.cli.collect import collect, heartbeat_settings
from vxtap.client import ApiError, ServerUnreachable
from vxtap.collector.heartbeat import Heartbeats


def test_beats_on_schedule_and_stop_at_once() -> None:
    times: list[float] = []
    beats = Heartbeats(lambda: times.append(time.monotonic()), interval=0.05)
    beats.start()
    deadline = time.monotonic() + 10
    while len(times) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    beats.stop()
    assert time.monotonic() - started < 1.0
    assert len(times) >= 5
    count = len(times)
    time.sleep(0.2)
    assert len(times) == count  # nothing after stop
    assert beats.thread is None


def test_a_slow_beat_never_queues_beats() -> None:
    calls: list[float] = []

    def slow() -> None:
        calls.append(time.monotonic())
        time.sleep(0.3)

    beats = Heartbeats(slow, interval=0.05)
    beats.start()
    time.sleep(1.0)
    beats.stop()
    # ~1 s of 0.3 s beats: about 3-4, never the 20 a queue of missed beats would give.
    assert 2 <= len(calls) <= 5


def test_failures_are_logged_once_per_change(caplog: pytest.LogCaptureFixture) -> None:
    outcomes: list[Exception | None] = [
        ServerUnreachable("https://s", "connection refused"),
        ServerUnreachable("https://s", "connection refused"),
        ServerUnreachable("https://s", "connection refused"),
        ApiError(401, "APIGW.0301", "access key revoked"),
        ApiError(401, "APIGW.0301", "access key revoked"),
        None,
        None,
    ]

    def beat() -> None:
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome

    beats = Heartbeats(beat, interval=0.01)
    with caplog.at_level(logging.INFO, logger="vxtap.collector"):
        for _ in range(7):
            beats.once()
    lines = [r.getMessage() for r in caplog.records if r.name == "vxtap.collector"]
    assert len(lines) == 3, lines
    assert "connection refused" in lines[0]
    assert "refused" in lines[1] and "revoked" in lines[1]
    assert "again" in lines[2]
    assert (beats.sent, beats.failed) == (2, 5)


def test_a_bug_in_a_beat_does_not_end_the_thread() -> None:
    calls = 0
    done = threading.Event()

    def beat() -> None:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise RuntimeError("bug")
        done.set()

    beats = Heartbeats(beat, interval=0.01)
    beats.start()
    assert done.wait(5)
    beats.stop()


def _credentials(tmp_path: Path, host: str | None = "h1") -> Path:
    entry = {"ak": "AK1", "sk": "SK1", "project_id": "p1"}
    if host is not None:
        entry["host"] = host
    path = tmp_path / "credentials.json"
    path.write_text(json.dumps([entry]))
    path.chmod(0o600)
    return path


def test_options_without_endpoint_send_nothing(tmp_path: Path) -> None:
    assert heartbeat_settings(None, None, None, None, None) is None
    with pytest.raises(CliError, match="--endpoint"):
        heartbeat_settings(None, _credentials(tmp_path), None, None, None)
    with pytest.raises(CliError, match="--credentials"):
        heartbeat_settings("https://s:9696", None, None, None, None)
    with pytest.raises(CliError, match="not an http"):
        heartbeat_settings("s:9696", _credentials(tmp_path), None, None, None)


def test_options_name_the_host_and_the_interface(tmp_path: Path) -> None:
    settings = heartbeat_settings("http://s:9696", _credentials(tmp_path), None, None, "eth1")
    assert settings is not None
    assert (settings.host, settings.devices) == ("h1", ("eth1",))
    settings = heartbeat_settings("http://s:9696", _credentials(tmp_path), None, None, None)
    assert settings is not None and settings.devices is None
    with pytest.raises(CliError, match="its own host"):
        heartbeat_settings("http://s:9696", _credentials(tmp_path), None, "h2", None)
    admin = _credentials(tmp_path, host=None)
    settings = heartbeat_settings("http://s:9696", admin, None, "h2", None)
    assert settings is not None and settings.host == "h2"


def test_config_file_and_environment(tmp_path: Path) -> None:
    """The options read the config file and VXTAP_COLLECT_* like the others; a bad
    combination is refused before anything opens."""
    config = tmp_path / "collect.toml"
    config.write_text(f'credentials = "{_credentials(tmp_path)}"\n')
    result = CliRunner().invoke(collect, ["--config", str(config)], env={"VXTAP_ENDPOINT": ""})
    assert result.exit_code == 1
    assert "give --endpoint URL too" in result.output
    result = CliRunner().invoke(
        collect, ["--config", str(config)], env={"VXTAP_ENDPOINT": "ftp://s"}
    )
    assert result.exit_code == 1
    assert "not an http" in result.output
