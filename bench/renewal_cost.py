"""What one held-request renewal costs the server: CPU per renewal, A/B between source trees.

    .venv/bin/python bench/renewal_cost.py [--hosts 200] [--renewals 4000] [--rounds 3]
        [--src NAME=PATH ...] [--profile NAME]

A renewal is what an idle agent sends every hold: `GET .../desired-state?wait=W` with
`If-None-Match` naming its current state, held until `W` passes and then answered 304.
Here `W` is short (`--wait`, default 0.02 s) so that many renewals fit in a few
seconds; the server does the same work as for a 300 s hold (signature check, routing,
revision read, registering a waiter, its timer, the 304). Every request is signed with
the host's own enrolled agent key (as `vxtap host add` issues them), so the access-key
look-up is included.

Each `--src NAME=PATH` is a source tree (its `src` directory) the server process runs
from (`PYTHONPATH`); the trees are measured in turn in every round (rotated order),
each against a fresh server on the same seeded SQLite database. Printed: the server's
CPU (utime+stime from /proc) per renewal, per tree and round, the medians and the
ratio to the first tree, and the generator's own CPU. `--profile NAME` runs that tree's
server once more under py-spy (pip install py-spy; `PY_SPY` names its binary) and
prints the functions that took the event loop's samples.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from vxtap import enrolment
from vxtap.auth import sign
from vxtap.model import TargetKind
from vxtap.store import filters as filter_store
from vxtap.store import hosts as host_store
from vxtap.store import ports as port_store
from vxtap.store import sessions as session_store
from vxtap.store.db import Store
from vxtap.store.filters import FilterSpec
from vxtap.store.ports import PortSpec
from vxtap.store.sessions import SessionSpec

sys.path.insert(0, str(Path(__file__).parent))
from fleet import PROJECT, free_port, read_response

ADMIN_AK, ADMIN_SK = "cost-ak", "cost-sk-" + "x" * 24


def seed(directory: Path, count: int) -> tuple[str, list[tuple[str, str, str]]]:
    """A database of `count` enrolled hosts with one port and session each; (db url,
    [(host, ak, sk)])."""
    db_url = f"sqlite:///{directory / 'vxtap.db'}"
    key_path = directory / enrolment.SIGNING_KEY_FILE
    signing_key, _ = enrolment.load_signing_key(key_path, create=True)
    store = Store(db_url)
    store.upgrade()
    agents = []
    with store.write() as db:
        shared = filter_store.create_filter(db, PROJECT, FilterSpec(name="cost"))
        target = port_store.create_port(
            db, PROJECT, "capture", PortSpec(device="eth0", ipv4=("10.255.0.1",))
        )
        for i in range(count):
            host = f"host{i:05d}"
            port = port_store.create_port(
                db, PROJECT,
                host, PortSpec(device="eth0", ipv4=(f"10.0.{i // 256}.{i % 256}",)),
            )  # fmt: skip
            session_store.create_session(
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
            ak = enrolment.new_access_key()
            host_store.enrol_host(db, PROJECT, host, ak)
            agents.append((host, ak, enrolment.agent_secret(signing_key, PROJECT, host, ak)))
    store.dispose()
    credentials = directory / "credentials.json"
    credentials.write_text(json.dumps([{"ak": ADMIN_AK, "sk": ADMIN_SK, "project_id": PROJECT}]))
    credentials.chmod(0o600)
    return db_url, agents


def start_server(
    src: Path, db_url: str, directory: Path, port: int, profile: Path | None
) -> subprocess.Popen[bytes]:
    prefix = [sys.executable]
    if profile is not None:
        prefix += ["-m", "cProfile", "-o", str(profile)]
    process = subprocess.Popen(
        [*prefix, "-m", "vxtap", "server", "--listen", f"127.0.0.1:{port}", "--db", db_url,
         "--credentials", str(directory / "credentials.json"), "--log-level", "warning"],
        env={**os.environ, "PYTHONPATH": str(src)},
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    process.kill()
    raise RuntimeError("server did not start")


def stop_server(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def request(port: int, host: str, ak: str, sk: str, tag: str | None, wait: float) -> bytes:
    path = f"/internal/v1/{PROJECT}/hosts/{host}/desired-state"
    query = f"?wait={wait:g}" if tag else ""
    headers = {"Content-Type": "application/json"}
    if tag:
        headers["If-None-Match"] = f'"{tag}"'
    headers.update(
        sign("GET", f"http://127.0.0.1:{port}{path}{query}", headers, b"", ak, sk, PROJECT)
    )
    lines = [f"GET {path}{query} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def renewals(
    port: int, agents: list[tuple[str, str, str]], total: int, wait: float
) -> tuple[int, float, float]:
    """Every agent fetches its state once, then all renew until `total` renewals were
    answered 304; (renewals, server-side wall seconds, generator CPU seconds)."""
    done = 0
    started = 0.0

    async def agent(host: str, ak: str, sk: str) -> None:
        nonlocal done
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request(port, host, ak, sk, None, wait))
        status, headers, _ = await read_response(reader)
        assert status == 200, status
        tag = headers["etag"].strip('"')
        await barrier.wait()
        while done < total:
            writer.write(request(port, host, ak, sk, tag, wait))
            status, _, _ = await read_response(reader)
            if status != 304:
                raise RuntimeError(f"renewal answered {status}")
            done += 1
        writer.close()

    barrier = asyncio.Barrier(len(agents) + 1)
    tasks = [asyncio.create_task(agent(*a)) for a in agents]
    await barrier.wait()
    started, gen0 = time.monotonic(), time.process_time()
    await asyncio.gather(*tasks)
    return done, time.monotonic() - started, time.process_time() - gen0


def profile(
    src: Path, db_url: str, directory: Path, agents: list[tuple[str, str, str]], args: Any
) -> None:
    """Sample the server with py-spy (`PY_SPY`, else `py-spy` on PATH) during renewals;
    print the functions by inclusive and by own samples."""
    out = directory / "profile.txt"
    port = free_port()
    process = start_server(src, db_url, directory, port, None)
    spy = subprocess.Popen(
        [os.environ.get("PY_SPY", "py-spy"), "record", "-p", str(process.pid), "-f", "raw",
         "-o", str(out), "-r", "500", "--nonblocking"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        time.sleep(1)
        asyncio.run(renewals(port, agents, args.renewals, args.wait))
    finally:
        spy.send_signal(signal.SIGINT)
        spy.wait()
        stop_server(process)
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in out.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        frames = stack.split(";")
        count = int(count_text)
        if "(selectors.py" in frames[-1]:
            continue  # the event loop waiting (py-spy leaves out most idle samples)
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    print(f"{total} busy samples")
    for title, table in (("inclusive", inclusive), ("own", own)):
        print(f"-- {title}")
        for frame, count in table.most_common(45):
            print(f"{100 * count / total:5.1f} %  {frame}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=200, help="agents renewing at once")
    parser.add_argument("--renewals", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--wait", type=float, default=0.02)
    parser.add_argument(
        "--src", nargs="+", default=[f"this={Path(__file__).resolve().parent.parent / 'src'}"]
    )
    parser.add_argument("--profile", default=None, help="a --src NAME to profile once")
    args = parser.parse_args()
    trees = dict(item.split("=", 1) for item in args.src)
    directory = Path(tempfile.mkdtemp(prefix="vxtap-renewal-"))
    try:
        db_url, agents = seed(directory, args.hosts)
        per_request: dict[str, list[float]] = {name: [] for name in trees}
        print(f"load before: {os.getloadavg()}", flush=True)
        for round_ in range(args.rounds):
            names = list(trees)
            names = names[round_ % len(names) :] + names[: round_ % len(names)]
            for name in names:
                port = free_port()
                process = start_server(Path(trees[name]), db_url, directory, port, None)
                try:
                    cpu0 = cpu_seconds(process.pid)
                    count, wall, generator = asyncio.run(
                        renewals(port, agents, args.renewals, args.wait)
                    )
                    cpu = cpu_seconds(process.pid) - cpu0
                finally:
                    stop_server(process)
                per_request[name].append(1000 * cpu / count)
                print(
                    f"round {round_} {name}: {count} renewals in {wall:.1f} s, server "
                    f"{1000 * cpu / count:.3f} ms CPU each ({100 * cpu / wall:.0f} % of a core), "
                    f"generator {100 * generator / wall:.0f} % of a core",
                    flush=True,
                )
        first = next(iter(trees))
        for name, values in per_request.items() if args.rounds else ():
            median = statistics.median(values)
            ratio = median / statistics.median(per_request[first])
            print(f"{name}: median {median:.3f} ms server CPU per renewal; x{ratio:.2f} of {first}")
        if args.profile:
            profile(Path(trees[args.profile]), db_url, directory, agents, args)
        print(f"load after: {os.getloadavg()}")
        print("command: .venv/bin/python bench/renewal_cost.py " + " ".join(sys.argv[1:]))
    finally:
        if not os.environ.get("KEEP"):
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
