"""The agent with 1 session and with 1,000 sessions of 10 rules, side by side in one run.

Measures, in namespaces (a management namespace with `vxtap server`, a source
host with the real `vxtap agent` and 334 ifb interfaces as sources; this kernel
has no dummy driver), over HTTPS (a throwaway CA made for the run, given to the
agent with --cacert), the agent signing with its own host credential (enrolled
through the API, as `vxtap host add` does) and following its desired state with
held requests:
- change latency: a session update's API call returning -> the agent finished
  applying it (the agent's own `vxtap_agent_last_apply_timestamp_seconds`);
- apply duration (the agent's histogram), per change;
- the agent's resident memory (VmRSS, and the peak VmHWM);
- the agent's CPU use while idle (polling the server, checking drift).

Usage: sudo .venv/bin/python bench/agent.py [--changes 5] [--idle 10]
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import httpx

from vxtap import auth, enrolment
from vxtap.client import VxtapClient
from vxtap.lab.certificates import make_certificates
from vxtap.netns import NamespaceThread, temporary_namespaces, veth

VXTAP = str(Path(sys.executable).with_name("vxtap"))
ENDPOINT = "https://10.201.0.1:9696"
METRICS = "http://10.201.0.2:9697/metrics"
HOST = "bench-host"
SESSIONS = 1000
RULES_PER_FILTER = 10
FILTERS = 100


def wait_for(condition: Callable[[], bool], timeout: float, what: str, every: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(every)


def metrics(in_mgmt: NamespaceThread) -> dict[str, float]:
    text = in_mgmt(lambda: httpx.get(METRICS, timeout=10).text)
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def proc_status(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])  # kB
    return fields


def cpu_seconds(pid: int) -> float:
    parts = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / 100.0  # utime + stime, clock ticks


def agent_pid(source_ns: str) -> int:
    """The python process of `vxtap agent` (ip netns exec execs it, so it is one PID)."""
    pids = subprocess.run(["ip", "netns", "pids", source_ns], capture_output=True, text=True)
    for pid in pids.stdout.split():
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if any(part == b"agent" for part in cmdline):
            return int(pid)
    raise SystemExit("agent process not found")


def measure_changes(
    api: Callable[[Callable[[VxtapClient], Any]], Any],
    in_mgmt: NamespaceThread,
    session_id: str,
    changes: int,
) -> tuple[list[float], list[float]]:
    latencies, applies = [], []
    for i in range(changes):
        before = metrics(in_mgmt)
        api(partial(VxtapClient.update_session, session_id=session_id, virtual_network_id=5000 + i))
        returned = time.time()

        def applied(returned: float = returned) -> bool:
            last = metrics(in_mgmt).get("vxtap_agent_last_apply_timestamp_seconds", 0)
            return last >= returned

        # The agent stamps the apply itself, so scraping more often would not make the
        # figure more exact; it would only make the agent render its ~12,000 series
        # (per-rule counters) every few ms, competing with the apply it measures.
        wait_for(applied, 30, "the change to be applied", every=0.1)
        after = metrics(in_mgmt)
        latencies.append(after["vxtap_agent_last_apply_timestamp_seconds"] - returned)
        count = after["vxtap_agent_apply_duration_seconds_count"]
        count -= before["vxtap_agent_apply_duration_seconds_count"]
        total = after["vxtap_agent_apply_duration_seconds_sum"]
        total -= before["vxtap_agent_apply_duration_seconds_sum"]
        applies.append(total / max(count, 1))
        time.sleep(0.3)
    return latencies, applies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=5)
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of idle CPU sampling")
    args = parser.parse_args()
    with temporary_namespaces("ag", "ag") as (mgmt, source):
        veth(mgmt, "m0", source, "mg0")
        mgmt.run(["ip", "addr", "add", "10.201.0.1/24", "dev", "m0"])
        source.run(["ip", "addr", "add", "10.201.0.2/24", "dev", "mg0"])
        dummies = (SESSIONS + 2) // 3  # a port is a source of at most 3 sessions
        batch = "".join(f"link add d{i} type ifb\nlink set d{i} up\n" for i in range(dummies))
        source.run(["ip", "-batch", "-"], input=batch)
        work = Path(f"/tmp/vxtap-bench-agent-{secrets.token_hex(3)}")
        work.mkdir()
        creds = {"ak": secrets.token_hex(8), "sk": secrets.token_hex(16), "project_id": "bench"}
        (work / "credentials.json").write_text(json.dumps([creds]))
        (work / "credentials.json").chmod(0o600)  # the server refuses a readable one
        tls = make_certificates(work / "tls", addresses=["10.201.0.1"])
        in_mgmt = NamespaceThread(mgmt)
        processes: list[subprocess.Popen[bytes]] = []
        rows: dict[str, dict[str, Any]] = {}

        def api(call: Callable[[VxtapClient], Any]) -> Any:
            def run() -> Any:
                with VxtapClient(
                    ENDPOINT, creds["ak"], creds["sk"], creds["project_id"], ca_bundle=tls.ca
                ) as c:
                    return call(c)

            return in_mgmt(run)

        try:
            log = (work / "server.log").open("ab")
            processes.append(
                mgmt.popen(
                    [
                        VXTAP,
                        "server",
                        "--listen",
                        "10.201.0.1:9696",
                        "--db",
                        f"sqlite:///{work / 'db.sqlite'}",
                        "--credentials",
                        str(work / "credentials.json"),
                        "--tls-cert",
                        str(tls.cert),
                        "--tls-key",
                        str(tls.key),
                    ],
                    stdout=log,
                    stderr=log,
                )
            )

            def server_up() -> bool:
                try:
                    api(lambda c: c.desired_state(HOST))
                except Exception:
                    return False
                return True

            wait_for(server_up, 30, "the server")
            issued, _ = api(lambda c: c.enrol_host(HOST))
            enrolment.write_credential_file(
                work / "agent-credentials.json", auth.Credential(**issued)
            )
            agent_log = (work / "agent.log").open("ab")
            processes.append(
                source.popen(
                    [
                        VXTAP,
                        "agent",
                        # --endpoint's old name: older trees, run as a baseline, know only it.
                        "--server",
                        ENDPOINT,
                        "--credentials",
                        str(work / "agent-credentials.json"),
                        "--cacert",
                        str(tls.ca),
                        "--host-name",
                        HOST,
                        "--metrics",
                        "10.201.0.2:9697",
                        "--state-dir",
                        str(work / "state"),
                    ],
                    stdout=agent_log,
                    stderr=agent_log,
                )
            )

            def registered() -> bool:
                return len(api(lambda c: c.desired_state(HOST)).ports) >= dummies

            wait_for(registered, 60, "the agent to register its interfaces")
            ports = {p.device: p.id for p in api(lambda c: c.desired_state(HOST)).ports}
            target = api(lambda c: c.create_port("collector", "eth0", ipv4=["10.99.0.2"]))
            filters = []
            for f in range(FILTERS):
                flt = api(partial(VxtapClient.create_filter, name=f"bench-{f}"))
                for r in range(RULES_PER_FILTER):
                    api(
                        partial(
                            VxtapClient.create_rule, filter_id=flt["id"],
                            direction="ingress" if r % 2 else "egress",
                            priority=r + 1, protocol="tcp",
                            source_cidr_block=f"10.{f}.{r}.0/24",
                            destination_port_range=f"{1000 + r}-{2000 + r}",
                        )
                    )  # fmt: skip
                filters.append(flt["id"])

            def create_session(i: int) -> str:
                session = api(
                    lambda c: c.create_session(
                        f"bench-{i}", filter_id=filters[i % FILTERS], sources=[ports[f"d{i // 3}"]],
                        target_id=target.id, priority=i % 3 + 1, virtual_network_id=100 + i,
                    )
                )  # fmt: skip
                return str(session["id"])

            first = create_session(0)
            wait_for(lambda: metrics(in_mgmt).get("vxtap_agent_sessions") == 1, 30, "1 session")
            pid = agent_pid(source.name)

            def sample(label: str, session_id: str) -> None:
                latencies, applies = measure_changes(api, in_mgmt, session_id, args.changes)
                server_pid = processes[0].pid  # ip netns exec execs the server
                cpu_before, t0 = cpu_seconds(pid), time.monotonic()
                server_before = cpu_seconds(server_pid)
                time.sleep(args.idle)
                elapsed = time.monotonic() - t0
                cpu = (cpu_seconds(pid) - cpu_before) / elapsed
                server_cpu = (cpu_seconds(server_pid) - server_before) / elapsed
                rows[label] = {
                    "latency_ms": statistics.median(latencies) * 1000,
                    "apply_ms": statistics.median(applies) * 1000,
                    "idle_cpu": cpu * 100,
                    "server_idle_cpu": server_cpu * 100,
                    **{k: v / 1024 for k, v in proc_status(pid).items()},
                }

            sample("1 session", first)
            started = time.monotonic()
            for i in range(1, SESSIONS):
                create_session(i)
            created = time.monotonic() - started

            def all_applied() -> bool:
                return metrics(in_mgmt).get("vxtap_agent_sessions") == SESSIONS

            wait_for(all_applied, 120, f"{SESSIONS} sessions applied")
            sample(f"{SESSIONS} sessions x {RULES_PER_FILTER} rules", first)
        finally:
            for process in reversed(processes):
                process.terminate()
                process.wait(timeout=15)
            in_mgmt.close()
            source.run([VXTAP, "agent", "--cleanup", "--state-dir", str(work / "state")])
            if len(rows) == 2:
                shutil.rmtree(work)
            else:
                print(f"logs kept in {work}", file=sys.stderr)
    one, many = rows["1 session"], rows[f"{SESSIONS} sessions x {RULES_PER_FILTER} rules"]
    print(f"command: {' '.join(sys.argv)}  (medians of {args.changes} changes; "
          f"{SESSIONS - 1} sessions created through the API in {created:.1f} s)")  # fmt: skip
    print("| | 1 session | 1,000 sessions x 10 rules | ratio |")
    print("|---|---|---|---|")
    for key, label in (
        ("latency_ms", "API call returned -> applied (ms)"),
        ("apply_ms", "compile + apply (ms)"),
        ("VmRSS", "agent resident memory (MiB)"),
        ("VmHWM", "agent peak resident memory (MiB)"),
        ("idle_cpu", "agent CPU while idle (% of one core)"),
        ("server_idle_cpu", "server CPU meanwhile, answering its polls (% of one core)"),
    ):
        ratio = many[key] / one[key] if one[key] else float("nan")
        print(f"| {label} | {one[key]:.1f} | {many[key]:.1f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
