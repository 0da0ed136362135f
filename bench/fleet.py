"""A fleet of simulated agents against one `vxtap server` process: held requests vs polling.

    .venv/bin/python bench/fleet.py [--agents 1000 10000] [--idle-seconds 10] [--changes 20]
        [--src NAME=PATH ...] [--runs MODE@NAME ...]

For each fleet size, a fresh SQLite database holds one project of N hosts, each with one
source port and one session (one shared filter and target). One real `vxtap server`
process serves it, from the source tree `--src NAME=PATH` names (its `src` directory on
PYTHONPATH; default: this checkout's). Every host is enrolled, and its agent signs with
its own key, as `vxtap agent` does with the credential `vxtap host add` wrote. The load
generator (this process, one asyncio loop, raw HTTP/1.1 on one keep-alive connection
per agent, every request signed like the SDK) simulates N agents that follow their
desired state in one of two modes; `--runs MODE@NAME` lists the runs, done one after
another for each size (the order rotated from one size to the next):

- `poll`: what agents did before: `If-None-Match` every 0.2 s, answered at once.
- `held`: what `vxtap agent` does now: `If-None-Match` with `?wait=300` (`--hold`); the
  server answers when that host's state changes, else 304 after the wait plus jitter.

Measured per mode and size:
- idle: the server's CPU (utime+stime from /proc, % of one core) over the idle window
  (held: the hold x 1.1 + 5 s, so that every agent renews its hold once), the requests
  answered, the server's CPU per request, and the generator's own CPU (to show it was
  not the limit);
- held only, at each size: a one-host change (toggle one session through the API)
  -> the one affected agent holding the new state (p50/p99 over `--changes`), and how
  many agents were answered with a new state per change (must be exactly 1);
- a change every agent must see (a rule of the shared filter): time until each agent
  holds the new state (p50/p99/max);
- a reconnect storm: the server is restarted; time until every agent got an answer
  again (the generator backs off like the agent: 0.25-0.5 s doubling to 2.5-5 s,
  jittered) and the count of 5xx answers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from vxtap import enrolment, model
from vxtap.agent.channel import HOLD_S
from vxtap.auth import sign
from vxtap.client import VxtapClient
from vxtap.model import TargetKind
from vxtap.store import filters as filter_store
from vxtap.store import hosts as host_store
from vxtap.store import ports as port_store
from vxtap.store import rules as rule_store
from vxtap.store import sessions as session_store
from vxtap.store.db import Store
from vxtap.store.filters import FilterSpec
from vxtap.store.ports import PortSpec
from vxtap.store.rules import RuleSpec
from vxtap.store.sessions import SessionSpec

AK, SK, PROJECT = "fleet-ak", "fleet-sk-" + "x" * 24, "fleet0project"
POLL_S = 0.2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def seed(
    db_url: str, hosts: int, signing_key: bytes
) -> tuple[str, str, list[str], list[tuple[str, str]]]:
    """N hosts with one source port and one session each, each enrolled; (filter id,
    rule id, session ids, each host's (ak, sk))."""
    keys: list[tuple[str, str]] = []
    store = Store(db_url)
    store.upgrade()
    sessions: list[str] = []
    with store.write() as db:
        shared = filter_store.create_filter(db, PROJECT, FilterSpec("fleet"))
        rule = rule_store.create_rule(
            db, PROJECT,
            RuleSpec(filter_id=shared.id, direction=model.Direction.INGRESS, priority=1,
                     action=model.Action.ACCEPT, ethertype=model.EtherType.IPV4,
                     protocol=model.Protocol.UDP, destination_ports="4000-4000"),
        )  # fmt: skip
        target = port_store.create_port(
            db, PROJECT, "capture", PortSpec(device="eth0", ipv4=("10.255.0.1",))
        )
        for i in range(hosts):
            port = port_store.create_port(
                db, PROJECT,
                f"host{i:05d}",
                PortSpec("eth0", ipv4=(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}",)),
            )  # fmt: skip
            row = session_store.create_session(
                db,
                PROJECT,
                SessionSpec(
                    name=f"s{i}",
                    filter_id=shared.id,
                    sources=(port.id,),
                    target_id=target.id,
                    target_kind=TargetKind.ENI,
                    vni=100,
                    priority=1,
                ),
            )
            sessions.append(row.id)
            ak = enrolment.new_access_key()
            host_store.enrol_host(db, PROJECT, f"host{i:05d}", ak)
            keys.append((ak, enrolment.agent_secret(signing_key, PROJECT, f"host{i:05d}", ak)))
    store.dispose()
    return shared.id, rule.id, sessions, keys


@dataclass
class ServerProcess:
    db_url: str
    credentials: Path
    port: int
    src: str
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "vxtap", "server", "--listen", f"127.0.0.1:{self.port}",
             "--db", self.db_url, "--credentials", str(self.credentials),
             "--log-level", "warning"],
            env={**os.environ, "PYTHONPATH": self.src},
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.endpoint}/healthz", timeout=1).status_code == 200:
                    return
            time.sleep(0.05)
        raise RuntimeError("server did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def cpu_seconds(self) -> float:
        assert self.process is not None
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Agent:
    host: str
    ak: str
    sk: str
    tag: str | None = None
    new_states: list[float] = field(default_factory=list)  # monotonic times of 200 answers
    answered: list[float] = field(default_factory=list)  # monotonic times of any 2xx/304
    errors_5xx: int = 0


class Fleet:
    def __init__(self, port: int, keys: list[tuple[str, str]], mode: str, hold: float) -> None:
        self.port = port
        self.hold = hold
        self.mode = mode
        self.agents = [Agent(f"host{i:05d}", ak, sk) for i, (ak, sk) in enumerate(keys)]
        self.requests = 0
        self.failures: dict[str, int] = {}
        self.running = True
        self.tasks: list[asyncio.Task[None]] = []

    def signed(self, agent: Agent, held: bool) -> bytes:
        path = f"/internal/v1/{PROJECT}/hosts/{agent.host}/desired-state"
        query = f"?wait={self.hold:g}" if held else ""
        headers = {"Content-Type": "application/json"}
        if agent.tag:
            headers["If-None-Match"] = f'"{agent.tag}"'
        url = f"http://127.0.0.1:{self.port}{path}{query}"
        headers.update(sign("GET", url, headers, b"", agent.ak, agent.sk, PROJECT))
        lines = [f"GET {path}{query} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items())]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    async def run_agent(self, agent: Agent) -> None:
        failures = 0
        writer: asyncio.StreamWriter | None = None
        while self.running:
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                # As vxtap agent: held once it has a tag, but not right after a failure.
                held = self.mode == "held" and agent.tag is not None and failures == 0
                writer.write(self.signed(agent, held))
                status, headers, _ = await read_response(reader)
                self.requests += 1
                now = time.monotonic()
                if status >= 500:
                    agent.errors_5xx += 1
                    raise ConnectionError(f"HTTP {status}")
                if status in (200, 304):
                    agent.answered.append(now)
                    agent.tag = headers.get("etag", "").strip('"') or agent.tag
                    if status == 200:
                        agent.new_states.append(now)
                failures = 0
                if self.mode == "poll":
                    await asyncio.sleep(POLL_S)
            except (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError) as error:
                self.failures[type(error).__name__] = self.failures.get(type(error).__name__, 0) + 1
                if writer is not None:
                    writer.close()
                    writer = None
                failures += 1
                ceiling = min(5.0, 0.5 * 2 ** (failures - 1))
                await asyncio.sleep(ceiling * (0.5 + 0.5 * random.random()))
        if writer is not None:
            writer.close()

    def start(self) -> None:
        self.tasks = [asyncio.create_task(self.run_agent(a)) for a in self.agents]

    async def stop(self) -> None:
        self.running = False
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0") or 0)
    body = await reader.readexactly(length) if length else b""
    return status, headers, body


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def until(condition: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.01)
    return False


async def measure(hosts: int, run: str, args: argparse.Namespace, out: dict[str, object]) -> None:
    mode, _, tree = run.partition("@")
    directory = Path(tempfile.mkdtemp(prefix="vxtap-fleet-"))
    db_url = f"sqlite:///{directory / 'vxtap.db'}"
    credentials = directory / "credentials.json"
    credentials.write_text(json.dumps([{"ak": AK, "sk": SK, "project_id": PROJECT}]))
    credentials.chmod(0o600)
    signing_key, _ = enrolment.load_signing_key(
        credentials.with_name(enrolment.SIGNING_KEY_FILE), create=True
    )
    started = time.monotonic()
    _, rule_id, sessions, keys = await asyncio.to_thread(seed, db_url, hosts, signing_key)
    label = f"{run} {hosts}"
    print(f"[{label}] seeded in {time.monotonic() - started:.0f} s; load {os.getloadavg()}")
    server = ServerProcess(db_url, credentials, free_port(), args.trees[tree])
    server.start()
    fleet = Fleet(server.port, keys, mode, args.hold)
    result: dict[str, object] = {}
    out[label] = result
    try:
        fleet.start()
        connected = await until(lambda: all(a.answered for a in fleet.agents), 120)
        result["all connected"] = connected
        await asyncio.sleep(args.settle)  # the server finishes taking the first requests
        cpu0, gen0, req0, wall0 = (
            server.cpu_seconds(),
            time.process_time(),
            fleet.requests,
            time.monotonic(),
        )
        # Held: long enough to include every agent renewing its hold once (+ jitter).
        await asyncio.sleep(
            args.idle_seconds if mode == "poll" else max(args.idle_seconds, args.hold * 1.1 + 5)
        )
        wall = time.monotonic() - wall0
        result["idle server CPU %"] = round(100 * (server.cpu_seconds() - cpu0) / wall, 1)
        result["idle requests/s"] = round((fleet.requests - req0) / wall)
        result["generator CPU %"] = round(100 * (time.process_time() - gen0) / wall, 1)
        result["server CPU ms per request"] = round(
            1000 * (server.cpu_seconds() - cpu0) / max(1, fleet.requests - req0), 3
        )
        print(f"[{label}] idle: {result}", flush=True)
        if mode != "held":
            return
        with VxtapClient(server.endpoint, AK, SK, PROJECT, timeout=30) as api:
            # One-host changes.
            latencies, answered_counts = [], []
            disabled: set[int] = set()
            for _ in range(args.changes):
                k = random.randrange(hosts)
                before = [len(a.new_states) for a in fleet.agents]
                await asyncio.to_thread(api.update_session, sessions[k], enabled=k in disabled)
                disabled ^= {k}
                returned = time.monotonic()
                await until(lambda k=k, b=before: len(fleet.agents[k].new_states) > b[k], 10)
                await asyncio.sleep(0.3)  # would anyone else be answered?
                agent = fleet.agents[k]
                if len(agent.new_states) > before[k]:
                    latencies.append(agent.new_states[before[k]] - returned)
                answered_counts.append(
                    sum(len(a.new_states) > b for a, b in zip(fleet.agents, before, strict=True))
                )
            result["one-host change p50 ms"] = round(1000 * statistics.median(latencies), 1)
            result["one-host change p99 ms"] = round(1000 * pct(latencies, 0.99), 1)
            result["agents answered per one-host change"] = sorted(set(answered_counts))
            print(f"[{label}] one-host: {result}", flush=True)
            # A change every agent must see: the shared filter's rule.
            before = [len(a.new_states) for a in fleet.agents]
            await asyncio.to_thread(api.update_rule, rule_id, destination_port_range="4001-4001")
            returned = time.monotonic()
            await until(
                lambda: all(
                    len(a.new_states) > b for a, b in zip(fleet.agents, before, strict=True)
                ),
                120,
            )
            everyone = [
                a.new_states[b] - returned
                for a, b in zip(fleet.agents, before, strict=True)
                if len(a.new_states) > b
            ]
            result["every-agent change: got it"] = len(everyone)
            result["every-agent change p50 ms"] = round(1000 * statistics.median(everyone))
            result["every-agent change p99 ms"] = round(1000 * pct(everyone, 0.99))
            result["every-agent change max ms"] = round(1000 * max(everyone))
            print(f"[{label}] every-agent: {result}", flush=True)
        # Reconnect storm: restart the server.
        errors_before = sum(a.errors_5xx for a in fleet.agents)
        server.stop()
        server.start()
        restarted = time.monotonic()
        back = await until(
            lambda: all(a.answered and a.answered[-1] > restarted for a in fleet.agents), 120
        )
        result["storm: everyone back"] = back
        result["storm: all back after s"] = round(time.monotonic() - restarted, 1)
        result["storm: 5xx"] = sum(a.errors_5xx for a in fleet.agents) - errors_before
        print(f"[{label}] storm: {result}", flush=True)
    finally:
        await fleet.stop()
        server.stop()
        with contextlib.suppress(OSError):
            for path in directory.iterdir():
                path.unlink()
            directory.rmdir()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--changes", type=int, default=20)
    parser.add_argument(
        "--src",
        nargs="+",
        default=[f"this={Path(__file__).resolve().parent.parent / 'src'}"],
        help="NAME=PATH: a source tree the server runs from (PATH is its src directory)",
    )
    parser.add_argument(
        "--runs",
        nargs="+",
        default=None,
        help="MODE@NAME (poll or held, a --src name); default: poll with the first tree, "
        "held with each",
    )
    parser.add_argument("--hold", type=float, default=HOLD_S, help="held requests' wait")
    parser.add_argument(
        "--settle", type=float, default=2.0, help="seconds after connecting, before idle"
    )
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    out: dict[str, object] = {}
    print(f"load: {os.getloadavg()}", flush=True)
    args.trees = dict(item.split("=", 1) for item in args.src)
    first = next(iter(args.trees))
    runs = args.runs or [f"poll@{first}", *(f"held@{name}" for name in args.trees)]
    for size, hosts in enumerate(args.agents):
        for run in runs[size % len(runs) :] + runs[: size % len(runs)]:
            await measure(hosts, run, args, out)
    print(f"load: {os.getloadavg()}")
    print(json.dumps(out, indent=2))
    print("command: python bench/fleet.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    asyncio.run(main())
