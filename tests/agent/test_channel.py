"""The agent's channel against a real broken server on loopback (`hostile_server.py`).

The namespace test (test_hostile_server.py) runs the whole agent against the same
server; these pin the client and channel behaviour without root.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.hostile_server import SCRIPT as HOSTILE
from support.servers import free_port
from vxtap.agent.channel import MAX_DESIRED_STATE_BYTES, Channel
from vxtap.agent.metrics import AgentMetrics
from vxtap.client import InvalidAnswer, VxtapClient
from vxtap.model import DesiredState


@dataclass
class Hostile:
    directory: Path
    endpoint: str

    def mode(self, mode: str) -> None:
        (self.directory / "mode").write_text(mode)

    def client(self, timeout: float = 2.0) -> VxtapClient:
        return VxtapClient(
            self.endpoint, "ak", "sk", "p1", timeout=timeout,
            max_answer_bytes=MAX_DESIRED_STATE_BYTES,
        )  # fmt: skip


@pytest.fixture
def hostile(tmp_path: Path) -> Iterator[Hostile]:
    port = free_port()
    (tmp_path / "state.json").write_text(DesiredState(host="h", revision="r1").model_dump_json())
    (tmp_path / "mode").write_text("good")
    # As a context manager, Popen also closes the pipe (an open one is a ResourceWarning).
    with subprocess.Popen(
        [sys.executable, str(HOSTILE), str(port), str(tmp_path)], stdout=subprocess.PIPE
    ) as process:
        try:
            assert process.stdout is not None and process.stdout.readline() == b"listening\n"
            yield Hostile(tmp_path, f"http://127.0.0.1:{port}")
        finally:
            process.kill()


def test_a_trickling_answer_is_cut_off_at_the_deadline(hostile: Hostile) -> None:
    hostile.mode("trickle")
    started = time.monotonic()
    with hostile.client(timeout=2.0) as client, pytest.raises(InvalidAnswer, match="too long"):
        client.fetch_desired_state("h")
    # Without a whole-answer deadline this took 1,000,000 x 0.5 s.
    assert time.monotonic() - started < 30


def test_a_held_request_is_cut_off_at_wait_plus_grace(hostile: Hostile) -> None:
    hostile.mode("trickle")
    with hostile.client() as client, pytest.raises(InvalidAnswer, match="too long"):
        client.fetch_desired_state("h", if_none_match="t-r0", wait=1.0)


def test_a_huge_answer_is_refused_after_the_cap_not_read_whole(hostile: Hostile) -> None:
    hostile.mode("huge")
    with hostile.client(timeout=10.0) as client, pytest.raises(InvalidAnswer, match="bytes"):
        client.fetch_desired_state("h")
    time.sleep(0.5)  # what the server got out before the connection closed
    sent = int((hostile.directory / "sent").read_text())
    assert sent < 3 * MAX_DESIRED_STATE_BYTES < 300 << 20  # stopped well before 300 MB


@pytest.mark.parametrize("mode", ["garbage", "invalid"])
def test_garbage_is_an_invalid_answer_not_a_crash(hostile: Hostile, mode: str) -> None:
    hostile.mode(mode)
    with hostile.client() as client, pytest.raises(InvalidAnswer, match="not a desired state"):
        client.fetch_desired_state("h")


def test_failures_log_once_count_every_fetch_and_back_off(
    hostile: Hostile, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = AgentMetrics()
    with hostile.client() as client:
        channel = Channel(host="h", server=client, metrics=metrics)
        with caplog.at_level(logging.INFO, logger="vxtap.agent"):
            assert channel.follow_once() >= 0.0 and channel.reachable is True
            hostile.mode("garbage")
            delays = [channel.follow_once() for _ in range(6)]
            hostile.mode("invalid")  # a different failure: one more line
            delays += [channel.follow_once() for _ in range(3)]
            hostile.mode("good")
            channel.tag = None  # not held: answered at once
            channel.follow_once()
        hostile.mode("garbage")
        channel.follow_once()
        assert metrics.registry.get_sample_value("vxtap_agent_server_reachable") == 0
    lines = [r.getMessage() for r in caplog.records]
    # reachable, garbage starts, invalid starts, reachable again, garbage starts again
    assert len(lines) == 5, lines
    assert "Traceback" not in caplog.text and all("\n" not in line for line in lines)
    assert lines[1].startswith("server unreachable: invalid answer from http://127.0.0.1")
    assert lines[3] == "server reachable again"
    assert delays[5] > delays[0]  # backed off
    failed = metrics.registry.get_sample_value(
        "vxtap_agent_failed_fetches_total", {"reason": "invalid"}
    )
    assert failed == 10


def test_the_follower_holds_with_the_last_tag(hostile: Hostile) -> None:
    with hostile.client() as client:
        channel = Channel(host="h", server=client, metrics=AgentMetrics(), hold=5.0)
        channel.follow_once()
        received = channel.take()
        assert received is not None and received.state is not None
        assert received.state.revision == "r1" and channel.tag == "t-r1"
        channel.follow_once()  # held by the server (1 s), then 304: nothing new
        assert channel.take() is None
    requests = (hostile.directory / "requests").read_text().splitlines()
    assert [line.split()[2] for line in requests] == ["-", '"t-r1"']
    assert json.loads((hostile.directory / "state.json").read_text())["revision"] == "r1"
