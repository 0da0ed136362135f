"""What `vxtap server` costs per signed request, side by side with the framework's ceiling.

    .venv/bin/python bench/api.py [--seconds S] [--clients N] [--concurrency C]
                                  [--baseline-src DIR]

Starts, on loopback ports, (1) a real `vxtap server` (one uvicorn process, temporary
SQLite database holding 2,000 sessions) and (2) the ceiling: a minimal FastAPI app
under the same uvicorn settings whose one route returns a constant small JSON object.
Then, interleaved round by round so that machine noise hits both alike:

- throughput (requests/s over S seconds, N client processes x C concurrent requests
  each) and latency (median, p95 at concurrency 1) of: the ceiling; show a session;
  list 2,000 sessions; create a filter. Every vxtap request is signed with
  SDK-HMAC-SHA256 by the client, as the SDK does.
- peak memory (VmHWM) of a server process that holds 10,000 sessions after it
  has answered lists over all of them (pages of 2,000) and shows;
- the disk's floor for durable writes: a one-row SQLite commit with
  synchronous=FULL (what the server uses) and NORMAL.

Prints medians over rounds, ratios against the ceiling, and the command.

With `--baseline-src DIR` (another tree's `src`, e.g. `git archive COMMIT src | tar -x
-C /tmp/base`), a second server runs that code (PYTHONPATH=DIR) on a copy of the same
database, measured right after this tree's in every round and scenario, and the table
shows both side by side with the ratio this/baseline.
The load generator shares the 2 cores with the server, as any local client would.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from vxtap import model
from vxtap.auth import sign
from vxtap.model import TargetKind
from vxtap.store import filters as filter_store
from vxtap.store import ports as port_store
from vxtap.store import rules as rule_store
from vxtap.store import sessions as session_store
from vxtap.store.db import Store
from vxtap.store.filters import FilterSpec
from vxtap.store.ports import PortSpec
from vxtap.store.rules import RuleSpec
from vxtap.store.sessions import SessionSpec

AK, SK, PROJECT = "bench-ak", "bench-sk", "bench0project"

CEILING_APP = """
from fastapi import FastAPI
from fastapi.responses import JSONResponse
import uvicorn, sys

app = FastAPI()

@app.get("/ceiling")
async def ceiling() -> JSONResponse:
    return JSONResponse({"request_id": "x", "status": "ok"})

uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
            access_log=False, server_header=False)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer")


@contextmanager
def running(
    command: list[str], ready_url: str, pythonpath: str | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    env = None if pythonpath is None else {**os.environ, "PYTHONPATH": pythonpath}
    process = subprocess.Popen(command, env=env)
    try:
        wait_ready(ready_url, process)
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def seed(db_url: str, sessions: int) -> str:
    """Store `sessions` sessions straight through the store (fast), return one id."""
    store = Store(db_url)
    store.upgrade()
    first = ""
    with store.write() as db:
        mirror_filter = filter_store.create_filter(db, PROJECT, FilterSpec("bench"))
        for priority in (1, 2):
            rule_store.create_rule(
                db,
                PROJECT,
                RuleSpec(
                    filter_id=mirror_filter.id,
                    direction=model.Direction.INGRESS,
                    priority=priority,
                    action=model.Action.ACCEPT,
                    ethertype=model.EtherType.IPV4,
                    protocol=model.Protocol.TCP,
                    destination_ports=f"{priority}-{priority}",
                ),
            )
        target = port_store.create_port(
            db, PROJECT, "capture", PortSpec(device="eth0", ipv4=("10.255.0.1",))
        )
        sources = [
            port_store.create_port(
                db,
                PROJECT,
                f"h{i // 1000}",
                PortSpec(
                    device=f"eth{i % 1000}", ipv4=(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}",)
                ),
            )
            for i in range((sessions + 2) // 3)
        ]
        for n in range(sessions):
            row = session_store.create_session(
                db,
                PROJECT,
                SessionSpec(
                    name=f"s{n}",
                    filter_id=mirror_filter.id,
                    sources=(sources[n // 3].id,),
                    target_id=target.id,
                    target_kind=TargetKind.ENI,
                    vni=n,
                    priority=n % 3 + 1,
                ),
            )
            first = first or row.id
    store.dispose()
    return first


@dataclass(frozen=True)
class Scenario:
    name: str
    method: str
    url: str
    body: bytes
    signed: bool


def headers_for(scenario: Scenario) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if scenario.signed:
        headers.update(sign(scenario.method, scenario.url, headers, scenario.body, AK, SK, PROJECT))
    return headers


async def _drive(scenario: Scenario, seconds: float, concurrency: int) -> list[float]:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:

        async def worker() -> None:
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                response = await client.request(
                    scenario.method,
                    scenario.url,
                    content=scenario.body,
                    headers=headers_for(scenario),
                )
                if response.status_code >= 300:
                    raise RuntimeError(f"{scenario.name}: {response.status_code} {response.text}")
                latencies.append(time.perf_counter() - start)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


def _drive_process(args: tuple[Scenario, float, int]) -> list[float]:
    return asyncio.run(_drive(*args))


def throughput(scenario: Scenario, seconds: float, clients: int, concurrency: int) -> float:
    with multiprocessing.get_context("spawn").Pool(clients) as pool:
        results = pool.map(_drive_process, [(scenario, seconds, concurrency)] * clients)
    # Each client counts only requests inside its own S-second window (pool start-up excluded).
    return sum(len(r) for r in results) / seconds


def latency(scenario: Scenario, count: int) -> tuple[float, float]:
    samples: list[float] = []
    with httpx.Client(timeout=60) as client:
        for _ in range(count):
            start = time.perf_counter()
            response = client.request(
                scenario.method,
                scenario.url,
                content=scenario.body,
                headers=headers_for(scenario),
            )
            samples.append(time.perf_counter() - start)
            assert response.status_code < 300, response.text
    samples.sort()
    return statistics.median(samples) * 1000, samples[int(len(samples) * 0.95)] * 1000


def peak_memory_mib(
    directory: Path, sessions: int, credentials: Path, pythonpath: str | None = None
) -> float:
    db_url = f"sqlite:///{directory / 'memory.db'}"
    session_id = seed(db_url, sessions) if pythonpath is None else _seeded_copy(directory)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [
        sys.executable,
        "-m",
        "vxtap",
        "server",
        "--listen",
        f"127.0.0.1:{port}",
        "--db",
        db_url,
        "--credentials",
        str(credentials),
        "--log-level",
        "warning",
    ]
    with (
        running(command, f"{base}/healthz", pythonpath) as process,
        httpx.Client(timeout=120) as client,
    ):
        marker = ""
        listed = 0
        for _round in range(3):
            while True:
                url = f"{base}/v3/{PROJECT}/vpc/traffic-mirror-sessions?limit=2000" + (
                    f"&marker={marker}" if marker else ""
                )
                scenario = Scenario("list", "GET", url, b"", True)
                page = client.get(url, headers=headers_for(scenario)).json()
                listed += len(page["traffic_mirror_sessions"])
                marker = page["page_info"].get("next_marker", "")
                if not marker:
                    break
        assert listed == 3 * sessions, listed
        show = f"{base}/v3/{PROJECT}/vpc/traffic-mirror-sessions/{session_id}"
        for _ in range(100):
            client.get(show, headers=headers_for(Scenario("show", "GET", show, b"", True)))
        status = Path(f"/proc/{process.pid}/status").read_text()
    peak_kib = next(
        int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")
    )
    return peak_kib / 1024


def _seeded_copy(directory: Path) -> str:
    """The memory database again (already seeded), for the baseline: the same sessions."""
    store = Store(f"sqlite:///{directory / 'memory.db'}")
    try:
        with store.read() as db:
            return str(
                session_store.list_sessions(db.connection(), PROJECT, {}, 1, None)[0].rows[0].id
            )
    finally:
        store.dispose()


def commit_ms(directory: Path, synchronous: str, commits: int = 200) -> float:
    """Median cost of a one-row SQLite commit in WAL mode: the disk's fsync floor for writes."""
    path = directory / f"commit-{synchronous}.db"
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute(f"PRAGMA synchronous={synchronous}")
    connection.execute("CREATE TABLE t (x INTEGER)")
    samples = []
    for i in range(commits):
        start = time.perf_counter()
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("INSERT INTO t VALUES (?)", (i,))
        connection.execute("COMMIT")
        samples.append(time.perf_counter() - start)
    connection.close()
    return statistics.median(samples) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency-samples", type=int, default=200)
    parser.add_argument("--memory-sessions", type=int, default=10_000)
    parser.add_argument(
        "--baseline-src", help="another tree's src: measured alongside, interleaved"
    )
    args = parser.parse_args()
    baseline: str | None = args.baseline_src

    directory = Path(tempfile.mkdtemp(prefix="vxtap-bench-api-"))
    credentials = directory / "credentials.json"
    credentials.write_text(json.dumps([{"ak": AK, "sk": SK, "project_id": PROJECT}]))
    credentials.chmod(0o600)  # the server refuses a readable one
    db_url = f"sqlite:///{directory / 'bench.db'}"
    session_id = seed(db_url, 2000)
    base_db_url = f"sqlite:///{directory / 'baseline.db'}"
    shutil.copy(directory / "bench.db", directory / "baseline.db")
    vx_port, ceiling_port, base_port = free_port(), free_port(), free_port()
    vx = f"http://127.0.0.1:{vx_port}"
    v3 = f"{vx}/v3/{PROJECT}/vpc"
    scenarios = [
        Scenario(
            "ceiling (minimal FastAPI GET)",
            "GET",
            f"http://127.0.0.1:{ceiling_port}/ceiling",
            b"",
            False,
        ),
        Scenario("show session", "GET", f"{v3}/traffic-mirror-sessions/{session_id}", b"", True),
        Scenario(
            "list 2,000 sessions", "GET", f"{v3}/traffic-mirror-sessions?limit=2000", b"", True
        ),
        Scenario(
            "create filter",
            "POST",
            f"{v3}/traffic-mirror-filters",
            json.dumps({"traffic_mirror_filter": {"name": "bench"}}).encode(),
            True,
        ),
    ]
    base_v3 = f"http://127.0.0.1:{base_port}/v3/{PROJECT}/vpc"
    twins = {
        s.name: Scenario(s.name, s.method, s.url.replace(v3, base_v3), s.body, s.signed)
        for s in scenarios[1:]
    }
    rates: dict[str, list[float]] = {s.name: [] for s in scenarios}
    medians: dict[str, list[float]] = {s.name: [] for s in scenarios}
    p95s: dict[str, list[float]] = {s.name: [] for s in scenarios}
    vx_command = [
        sys.executable,
        "-m",
        "vxtap",
        "server",
        "--listen",
        f"127.0.0.1:{vx_port}",
        "--db",
        db_url,
        "--credentials",
        str(credentials),
        "--log-level",
        "warning",
    ]
    base_rates: dict[str, list[float]] = {name: [] for name in twins}
    base_medians: dict[str, list[float]] = {name: [] for name in twins}
    base_command = [
        *vx_command[:5],
        f"127.0.0.1:{base_port}",
        "--db",
        base_db_url,
        *vx_command[8:],
    ]
    ceiling_command = [sys.executable, "-c", CEILING_APP, str(ceiling_port)]
    with (
        running(vx_command, f"{vx}/healthz"),
        running(ceiling_command, scenarios[0].url),
        running(base_command, f"http://127.0.0.1:{base_port}/healthz", baseline)
        if baseline
        else contextlib.nullcontext(),
    ):
        for _round in range(args.rounds):
            for scenario in scenarios:
                rates[scenario.name].append(
                    throughput(scenario, args.seconds, args.clients, args.concurrency)
                )
                median, p95 = latency(scenario, args.latency_samples)
                medians[scenario.name].append(median)
                p95s[scenario.name].append(p95)
                twin = twins.get(scenario.name)
                if baseline and twin is not None:
                    base_rates[twin.name].append(
                        throughput(twin, args.seconds, args.clients, args.concurrency)
                    )
                    base_medians[twin.name].append(latency(twin, args.latency_samples)[0])
    memory = peak_memory_mib(directory, args.memory_sessions, credentials)
    base_memory = (
        peak_memory_mib(directory, args.memory_sessions, credentials, baseline)
        if baseline
        else None
    )
    commit_full, commit_normal = commit_ms(directory, "FULL"), commit_ms(directory, "NORMAL")

    ceiling = statistics.median(rates[scenarios[0].name])
    print(
        f"command: .venv/bin/python bench/api.py --seconds {args.seconds} --clients "
        f"{args.clients} --concurrency {args.concurrency} --rounds {args.rounds}"
        + (f" --baseline-src {baseline}" if baseline else "")
    )
    print(f"{'scenario':32} {'req/s':>8} {'x ceiling':>9} {'p50 ms':>8} {'p95 ms':>8}")
    for scenario in scenarios:
        rate = statistics.median(rates[scenario.name])
        print(
            f"{scenario.name:32} {rate:8.0f} {rate / ceiling:9.2f} "
            f"{statistics.median(medians[scenario.name]):8.2f} "
            f"{statistics.median(p95s[scenario.name]):8.2f}"
        )
    if baseline:
        print(f"\nthis tree vs baseline ({baseline}), interleaved, medians over rounds:")
        print(
            f"{'scenario':32} {'req/s':>8} {'base':>8} {'ratio':>6} "
            f"{'p50 ms':>8} {'base':>8} {'ratio':>6}"
        )
        for name in twins:
            rate, base_rate = (statistics.median(rates[name]), statistics.median(base_rates[name]))
            p50 = statistics.median(medians[name])
            base_p50 = statistics.median(base_medians[name])
            print(
                f"{name:32} {rate:8.0f} {base_rate:8.0f} {rate / base_rate:6.2f} "
                f"{p50:8.2f} {base_p50:8.2f} {p50 / base_p50:6.2f}"
            )
    print(
        f"peak memory (VmHWM) of the server with {args.memory_sessions:,} sessions, after "
        f"listing all of them 3x in pages of 2,000: {memory:.0f} MiB"
        + (f" (baseline {base_memory:.0f} MiB)" if base_memory is not None else "")
    )
    print(
        f"SQLite one-row commit (WAL): synchronous=FULL {commit_full:.3f} ms, "
        f"NORMAL {commit_normal:.3f} ms (the server uses FULL)"
    )
    shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
