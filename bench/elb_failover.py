"""Failover time of a target-group member: `vxtap lab run elb --break collector-down`,
several times, in namespaces (needs root).

Each run brings the lab up, starts 256 iperf3 flows through ECS-source, kills one
member's collector (SIGKILL by PID) and measures, on tcpdump's own timestamps at the
members, the time from the kill to the last copy still sent to the stopped member and
to the first copy of one of its flows at another member (the failover is the later of
the two); the time from the kill until the source agent's applied state showed the
member down (the control path alone: heartbeats' silence, the server's checker, the held
request, the agent's apply); then the time from the collector's restart until the
source's agent had placed the member again. Printed per run and as median, min and
max, with the machine's load.

  sudo PYTHONPATH=src .venv/bin/python bench/elb_failover.py --runs 5
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import tempfile
import time
from pathlib import Path

from vxtap.lab.lab import Lab
from vxtap.lab.scenario import get

FIGURES = (
    "failover_s",
    "last_copy_to_stopped_s",
    "first_moved_copy_s",
    "taken_out_at_source_s",  # kill -> the source agent's applied state shows it down
    "placed_again_s",
)


def one_run(directory: Path) -> tuple[dict[str, float], bool]:
    lab = Lab(directory, f"vxtap-lab-b{secrets.token_hex(2)}-", say=lambda _: None)
    report = lab.run(get("elb"), ["collector-down"])
    return report.measured, report.passed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    results: dict[str, list[float]] = {name: [] for name in FIGURES}
    passed = 0
    print(f"load before: {os.getloadavg()}")
    for run in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="vxtap-bench-elb-") as tmp:
            started = time.monotonic()
            measured, ok = one_run(Path(tmp) / "lab")
        passed += ok
        for name in FIGURES:
            if name in measured:
                results[name].append(measured[name])
        figures = ", ".join(f"{k} {v:.2f}" for k, v in measured.items())
        print(
            f"run {run + 1}: {'PASS' if ok else 'FAIL'} {figures} "
            f"({time.monotonic() - started:.0f} s)"
        )
    print(f"load after: {os.getloadavg()}; {passed}/{args.runs} runs passed every check")
    for name, values in results.items():
        if values:
            print(
                f"{name}: median {statistics.median(values):.2f} s, "
                f"min {min(values):.2f} s, max {max(values):.2f} s (n={len(values)})"
            )


if __name__ == "__main__":
    main()
