"""The real `vxtap agent` against a broken or hostile server (`hostile_server.py`), in namespaces.

    source-host (vxtap agent, hostile server on its 127.0.0.1)  eth0 ══ p0 peer
                                                                 u0 ══ t0 target

The agent first gets a valid state (an nft table, a VXLAN device), then the server
turns bad. Whatever it does, drift repair must go on, memory must stay small, and the
agent must say so once, in its log and its metrics.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from test_daemon import VXTAP, wait_for

from support.hostile_server import SCRIPT as HOSTILE
from support.servers import free_port
from vxtap.dataplane.kernel import Dataplane
from vxtap.dataplane.plan import compile_plan
from vxtap.model import DesiredState, Filter, Port, Rule, Session
from vxtap.netns import Namespace, NamespaceThread, temporary_namespaces, veth

STATE = DesiredState(
    host="h",
    revision="r1",
    ports=(Port(id="p-src", host="h", device="eth0", ipv4=("10.77.0.1",)),),
    sessions=(
        Session(id="s1", name="s1", filter_id="f1", sources=("p-src",), target_id="p-tgt",
                vni=77, priority=1),
    ),
    filters=(
        Filter(id="f1", name="all", rules=(
            Rule.model_validate({"id": "r1", "filter_id": "f1", "direction": "ingress",
                                 "priority": 1, "action": "accept", "ethertype": "IPv4",
                                 "protocol": "ALL"}),
        )),
    ),
    targets=(Port(id="p-tgt", host="t", device="t0", ipv4=("10.99.0.2",)),),
)  # fmt: skip


@dataclass
class Setup:
    source: Namespace
    directory: Path
    agent: subprocess.Popen[bytes]
    metrics_port: int
    in_source: NamespaceThread

    def mode(self, mode: str) -> None:
        (self.directory / "mode").write_text(mode)

    def drift(self) -> list[str]:
        return Dataplane(netns=self.source.name).drift(compile_plan(STATE))

    def log(self) -> str:
        return (self.directory / "agent.log").read_text(errors="replace")

    def metric(self, name: str) -> float | None:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        text = self.in_source(lambda: httpx.get(url, timeout=5).text)
        for line in text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
        return None

    def peak_rss_kib(self) -> int:
        status = Path(f"/proc/{self.agent.pid}/status").read_text()
        return int(next(ln for ln in status.splitlines() if ln.startswith("VmHWM:")).split()[1])


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces")
    with temporary_namespaces("hs", "hs", "hs") as (source, peer, target):
        veth(peer, "p0", source, "eth0")
        veth(source, "u0", target, "t0")
        for ns, device, address in (
            (peer, "p0", "10.77.0.2/24"),
            (source, "eth0", "10.77.0.1/24"),
            (source, "u0", "10.99.0.1/24"),
            (target, "t0", "10.99.0.2/24"),
        ):
            ns.run(["ip", "addr", "add", address, "dev", device])
        (tmp_path / "state.json").write_text(STATE.model_dump_json())
        (tmp_path / "mode").write_text("good")
        (tmp_path / "credentials.json").write_text('[{"ak": "a", "sk": "s", "project_id": "p"}]')
        (tmp_path / "credentials.json").chmod(0o600)  # the agent refuses a readable one
        port, metrics_port = free_port(), free_port()
        server = source.popen(
            [sys.executable, str(HOSTILE), str(port), str(tmp_path)], stdout=subprocess.PIPE
        )
        agent = None
        in_source = NamespaceThread(source)
        try:
            assert server.stdout is not None and server.stdout.readline() == b"listening\n"
            # --server: --endpoint's old name, which a real agent still takes.
            with (tmp_path / "agent.log").open("ab") as log:
                agent = source.popen(
                    [VXTAP, "agent", "--server", f"http://127.0.0.1:{port}",
                     "--credentials", str(tmp_path / "credentials.json"), "--host-name", "h",
                     "--metrics", f"127.0.0.1:{metrics_port}", "--state-dir", str(tmp_path / "st")],
                    stdout=log, stderr=log,
                )  # fmt: skip
            setup = Setup(source, tmp_path, agent, metrics_port, in_source)
            wait_for(lambda: not setup.drift(), 20, "the agent to apply the valid state")
            yield setup
        finally:
            for process in (agent, server):
                if process is not None:
                    process.kill()
                    process.wait()
            if server.stdout is not None:
                server.stdout.close()
            in_source.close()
            Dataplane(netns=source.name).cleanup()
            if os.environ.get("VXTAP_TEST_VERBOSE"):
                print((tmp_path / "agent.log").read_text(errors="replace"))


def test_a_trickling_server_does_not_hold_up_drift_repair(setup: Setup) -> None:
    setup.mode("trickle")
    wait_for(
        lambda: (setup.directory / "requests").read_text().count(" trickle ") >= 1,
        40,
        "the agent to ask the trickling server",
    )
    setup.source.run(["nft", "delete", "table", "netdev", "vxtap"])
    took = wait_for(lambda: not setup.drift(), 15, "the deleted table to be restored")
    print(f"deleted nft table restored in {took * 1000:.0f} ms while the server trickles")
    wait_for(lambda: "repairing drift" in setup.log(), 5, "the repair to be logged")
    assert (setup.directory / "requests").read_text().splitlines()[-1].split()[1] == "trickle"


def test_a_huge_answer_does_not_take_the_hosts_memory(setup: Setup) -> None:
    before = setup.peak_rss_kib()
    setup.mode("huge")
    wait_for(lambda: "bytes allowed" in setup.log(), 60, "the agent to refuse the huge answer")
    peak = setup.peak_rss_kib()
    print(f"agent peak RSS {before // 1024} MiB before, {peak // 1024} MiB after a 300 MB answer")
    assert peak - before < 64 * 1024  # the cap is 16 MiB; it took 2.1 GB before
    assert not setup.drift() and setup.agent.poll() is None


def test_garbage_logs_once_backs_off_and_shows_in_metrics(setup: Setup) -> None:
    setup.mode("garbage")
    wait_for(lambda: setup.metric("vxtap_agent_server_reachable") == 0, 40, "reachable 0")
    requests_file = setup.directory / "requests"
    asked = requests_file.read_text().count(" garbage ")
    wait_for(
        lambda: requests_file.read_text().count(" garbage ") >= asked + 5,
        60,
        "the agent to keep asking, backing off",
    )
    garbage_asks = [
        float(line.split()[0])
        for line in requests_file.read_text().splitlines()
        if " garbage " in line
    ]
    gaps = [b - a for a, b in itertools.pairwise(garbage_asks)]
    assert max(gaps) > 1.0  # backed off from the first retry (0.25-0.5 s) towards 5 s
    log = setup.log()
    assert log.count("not a desired state") == 1 and "Traceback" not in log
    failed = setup.metric("vxtap_agent_failed_fetches_total")
    assert failed is not None and failed >= len(garbage_asks)
    setup.mode("good")
    wait_for(lambda: setup.metric("vxtap_agent_server_reachable") == 1, 30, "reachable again")
    assert "server reachable again" in setup.log()
