"""What `VxtapClient` and the `vxtap` CLI cost, side by side with the official SDK.

    .venv/bin/python bench/client.py [--rounds N]

Starts its own `vxtap server` (temporary SQLite database, loopback port) and
measures, interleaved in one run so that machine noise hits both sides alike:

1. in-process request latency, `VxtapClient` vs `huaweicloudsdkvpc.v3.VpcClient`
   (the reference client), both signed: show a filter with two rules, list 200
   sessions;
2. the wall time of one CLI invocation, `vxtap filter show ID --json`, vs a
   Python process that does the same through the official SDK, vs an empty
   `python -c pass` (the floor: interpreter start-up).

Prints medians, ratios and the command; the figures go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from vxtap.client import VxtapClient
from vxtap.model import Interface

BIN = Path(sys.executable).parent
AK, SK, PROJECT = "bench-ak", "bench-sk", "bench-project"
SESSIONS = 200

SDK_SHOW = """
import sys
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkvpc.v3 import VpcClient, ShowTrafficMirrorFilterRequest
endpoint, ak, sk, project, filter_id = sys.argv[1:]
client = (VpcClient.new_builder().with_credentials(BasicCredentials(ak, sk, project))
          .with_endpoint(endpoint).build())
print(client.show_traffic_mirror_filter(
    ShowTrafficMirrorFilterRequest(traffic_mirror_filter_id=filter_id)).to_json_object())
"""


@dataclass(frozen=True)
class Server:
    endpoint: str


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running_server(workdir: Path) -> Iterator[Server]:
    credentials = workdir / "credentials.json"
    credentials.write_text(json.dumps([{"ak": AK, "sk": SK, "project_id": PROJECT}]))
    credentials.chmod(0o600)  # the server refuses a readable one
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [
            str(BIN / "vxtap"),
            "server",
            "--listen",
            f"127.0.0.1:{port}",
            "--db",
            f"sqlite:///{workdir / 'bench.db'}",
            "--credentials",
            str(credentials),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(endpoint + "/", timeout=1)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("vxtap server did not start") from None
                time.sleep(0.1)
        yield Server(endpoint)
    finally:
        process.terminate()
        process.wait(timeout=10)


def _timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def compare(
    label: str, ours: Callable[[], object], theirs: Callable[[], object], rounds: int
) -> None:
    mine: list[float] = []
    reference: list[float] = []
    for _ in range(rounds):  # interleaved, so both sides see the same machine
        mine.append(_timed(ours))
        reference.append(_timed(theirs))
    a, b = _median_ms(mine), _median_ms(reference)
    print(f"| {label} | {a:.2f} ms | {b:.2f} ms | {a / b:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300, help="requests per in-process figure")
    parser.add_argument("--runs", type=int, default=15, help="processes per CLI figure")
    args = parser.parse_args()

    from huaweicloudsdkcore.auth.credentials import BasicCredentials
    from huaweicloudsdkvpc.v3 import (
        ListTrafficMirrorSessionsRequest,
        ShowTrafficMirrorFilterRequest,
        VpcClient,
    )

    with tempfile.TemporaryDirectory() as tmp, running_server(Path(tmp)) as server:
        ours = VxtapClient(server.endpoint, AK, SK, PROJECT)
        sdk = (
            VpcClient.new_builder()
            .with_credentials(BasicCredentials(AK, SK, PROJECT))
            .with_endpoint(server.endpoint)
            .build()
        )
        item = ours.create_filter("bench")
        for priority, protocol in ((1, "TCP"), (2, "UDP")):
            ours.create_rule(item["id"], direction="ingress", priority=priority, protocol=protocol)
        ports = ours.register_ports(
            "bench-host",
            [
                Interface(device=f"eth{i}", ipv4=(f"10.0.{i // 250}.{i % 250 + 1}",))
                for i in range(SESSIONS + 1)
            ],
        )
        target, sources = ports[0], ports[1:]
        for n, source in enumerate(sources):
            ours.create_session(
                f"s{n}", filter_id=item["id"], sources=[source.id], target_id=target.id, priority=1
            )

        print(
            f"command: {sys.executable} bench/client.py --rounds {args.rounds} --runs {args.runs}"
        )
        print("| operation | VxtapClient | official SDK | ratio |")
        print("|---|---|---|---|")
        compare(
            "show filter (2 rules)",
            lambda: ours.show_filter(item["id"]),
            lambda: sdk.show_traffic_mirror_filter(
                ShowTrafficMirrorFilterRequest(traffic_mirror_filter_id=item["id"])
            ),
            args.rounds,
        )
        compare(
            f"list {SESSIONS} sessions",
            lambda: ours.list_sessions(),
            lambda: sdk.list_traffic_mirror_sessions(ListTrafficMirrorSessionsRequest()),
            max(args.rounds // 5, 10),
        )

        env = {
            **os.environ,
            "VXTAP_ENDPOINT": server.endpoint,
            "VXTAP_AK": AK,
            "VXTAP_SK": SK,
            "VXTAP_PROJECT_ID": PROJECT,
        }

        def run(argv: list[str]) -> Callable[[], object]:
            return lambda: subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)

        commands = {
            "`vxtap filter show ID --json`": run(
                [str(BIN / "vxtap"), "filter", "show", item["id"], "--json"]
            ),
            "same through the SDK (python script)": run(
                [sys.executable, "-c", SDK_SHOW, server.endpoint, AK, SK, PROJECT, item["id"]]
            ),
            "`python -c pass` (floor)": run([sys.executable, "-c", "pass"]),
        }
        samples: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.runs):
            for name, command in commands.items():
                samples[name].append(_timed(command))
        print()
        print("| one process | median wall time |")
        print("|---|---|")
        for name, values in samples.items():
            print(f"| {name} | {_median_ms(values):.0f} ms |")
        ours.close()


if __name__ == "__main__":
    main()
