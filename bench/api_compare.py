"""Two `vxtap server` versions side by side: bench/api.py's requests, interleaved.

    .venv/bin/python bench/api_compare.py --baseline-src DIR [--seconds S] [--rounds R]

DIR is the `src` directory of the baseline (e.g. `git archive <commit> src | tar -x -C
/tmp/base`); the other server runs this checkout's code. Both get identical seeded
SQLite databases; every round runs each scenario against the baseline and the current
server in alternating order, so that noise from the shared machine hits both alike.
Prints per scenario the median throughput and p50 latency of each, and the median of
the per-round ratios (current / baseline, each pair measured back to back).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from api import AK, PROJECT, SK, Scenario, free_port, latency, running, seed, throughput

HERE_SRC = Path(__file__).resolve().parents[1] / "src"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline-src", type=Path, required=True)
    parser.add_argument("--current-src", type=Path, default=HERE_SRC, help="(an A/A check)")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--latency-samples", type=int, default=200)
    parser.add_argument("--only", help="run only the scenarios whose name contains this")
    args = parser.parse_args()

    directory = Path(tempfile.mkdtemp(prefix="vxtap-bench-compare-"))
    credentials = directory / "credentials.json"
    credentials.write_text(json.dumps([{"ak": AK, "sk": SK, "project_id": PROJECT}]))
    session_id = seed(f"sqlite:///{directory / 'seeded.db'}", 2000)
    versions = {"baseline": args.baseline_src.resolve(), "current": args.current_src.resolve()}
    servers = {}
    for name in versions:
        shutil.copy(directory / "seeded.db", directory / f"{name}.db")
        servers[name] = free_port()

    def scenarios(port: int) -> list[Scenario]:
        v3 = f"http://127.0.0.1:{port}/v3/{PROJECT}/vpc"
        body = json.dumps({"traffic_mirror_filter": {"name": "bench"}}).encode()
        return [
            Scenario("show session", "GET", f"{v3}/traffic-mirror-sessions/{session_id}",
                     b"", True),
            Scenario("list 2,000 sessions", "GET", f"{v3}/traffic-mirror-sessions?limit=2000",
                     b"", True),
            Scenario("create filter", "POST", f"{v3}/traffic-mirror-filters", body, True),
        ]  # fmt: skip

    rates: dict[tuple[str, str], list[float]] = {}
    p50s: dict[tuple[str, str], list[float]] = {}
    base_env = dict(os.environ)
    processes = []
    try:
        for name, src in versions.items():
            os.environ["PYTHONPATH"] = str(src)
            command = [sys.executable, "-m", "vxtap", "server", "--listen",
                       f"127.0.0.1:{servers[name]}", "--db",
                       f"sqlite:///{directory / f'{name}.db'}", "--credentials",
                       str(credentials), "--log-level", "warning"]  # fmt: skip
            manager = running(command, f"http://127.0.0.1:{servers[name]}/healthz")
            manager.__enter__()
            processes.append(manager)
        os.environ.clear()
        os.environ.update(base_env)
        for number in range(args.rounds):
            order = list(versions) if number % 2 == 0 else list(reversed(versions))
            for index in range(3):
                if args.only and args.only not in scenarios(0)[index].name:
                    continue
                for name in order:
                    scenario = scenarios(servers[name])[index]
                    key = (scenario.name, name)
                    rates.setdefault(key, []).append(
                        throughput(scenario, args.seconds, args.clients, args.concurrency)
                    )
                    p50s.setdefault(key, []).append(latency(scenario, args.latency_samples)[0])
    finally:
        for manager in reversed(processes):
            manager.__exit__(None, None, None)
        shutil.rmtree(directory, ignore_errors=True)
    print(
        f"command: .venv/bin/python bench/api_compare.py --baseline-src {args.baseline_src} "
        f"--seconds {args.seconds} --clients {args.clients} --concurrency {args.concurrency} "
        f"--rounds {args.rounds}" + (f" --only {args.only!r}" if args.only else "")
    )
    print(f"{'scenario':24} {'base req/s':>10} {'cur req/s':>10} {'ratio':>6} "
          f"{'base p50':>9} {'cur p50':>9} {'ratio':>6}")  # fmt: skip
    for scenario in scenarios(0):
        if (scenario.name, "baseline") not in rates:
            continue
        base_rate = statistics.median(rates[(scenario.name, "baseline")])
        cur_rate = statistics.median(rates[(scenario.name, "current")])
        base_p50 = statistics.median(p50s[(scenario.name, "baseline")])
        cur_p50 = statistics.median(p50s[(scenario.name, "current")])
        rate_ratio = statistics.median(
            c / b
            for c, b in zip(
                rates[(scenario.name, "current")], rates[(scenario.name, "baseline")], strict=True
            )
        )
        p50_ratio = statistics.median(
            c / b
            for c, b in zip(
                p50s[(scenario.name, "current")], p50s[(scenario.name, "baseline")], strict=True
            )
        )
        print(
            f"{scenario.name:24} {base_rate:10.0f} {cur_rate:10.0f} {rate_ratio:6.2f} "
            f"{base_p50:8.2f}ms {cur_p50:8.2f}ms {p50_ratio:6.2f}"
        )


if __name__ == "__main__":
    main()
