"""A crashed `vxtap lab up` leaves processes and namespaces behind: the next
`up` removes them (only the processes the lab recorded) and works."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyroute2 import netns

from vxtap.lab.lab import Lab
from vxtap.lab.runtime import ProcessRecord, process_start_time, stop
from vxtap.lab.scenario import get

pytestmark = pytest.mark.netns


@pytest.fixture
def lab(tmp_path: Path, make_namespace: object) -> Iterator[Lab]:
    the_lab = Lab(tmp_path / "lab", f"vxtap-lab-t{secrets.token_hex(2)}-", say=lambda _: None)
    try:
        yield the_lab
    finally:
        the_lab.down()
        assert not [n for n in netns.listnetns() if n.startswith(the_lab.prefix)]


def test_up_after_a_killed_up_works_and_stops_the_orphans(lab: Lab) -> None:
    code = (
        "from pathlib import Path; from vxtap.lab.lab import Lab; "
        "from vxtap.lab.scenario import get; "
        f"Lab(Path({str(lab.dir.path)!r}), {lab.prefix!r}, say=lambda _: None).up(get('seed'))"
    )
    crashing = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            record = lab.dir.load()
            if record and any(p.role.startswith("agent-") for p in record.processes):
                break
            time.sleep(0.1)
        else:
            pytest.fail("the first up never started an agent")
    finally:
        crashing.send_signal(signal.SIGKILL)
        crashing.wait()
    orphans = [p for p in lab.dir.load().processes]  # type: ignore[union-attr]
    assert any(process_start_time(p.pid) == p.start_time for p in orphans)

    lab.up(get("seed"))
    for p in orphans:
        assert process_start_time(p.pid) != p.start_time, f"{p.role} still runs"
    report = lab.verify(get("seed"))
    assert report.passed, [str(f) for f in report.failures]


def test_stop_leaves_a_process_whose_pid_was_reused_alone() -> None:
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        started = process_start_time(sleeper.pid)
        assert started is not None
        stranger = ProcessRecord("x", "vxtap-lab-none", sleeper.pid, started - 1, [], "")
        stop(stranger)
        assert sleeper.poll() is None, "stopped a process the lab did not start"
        stop(ProcessRecord("x", "vxtap-lab-none", sleeper.pid, started, [], ""))
        assert process_start_time(sleeper.pid) is None  # stopped and reaped
    finally:
        if sleeper.poll() is None:
            os.kill(sleeper.pid, signal.SIGKILL)
            sleeper.wait()
