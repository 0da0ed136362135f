"""What mounting the web console costs an API request, measured without the network.

    .venv/bin/python bench/console_cost.py [--blocks B] [--requests N]

One process builds two API applications over one seeded SQLite store: as
`create_app` builds it (console mounted at /console) and with the mount left out.
It then sends signed "show session" and "list 200 sessions" requests straight into
each ASGI application, alternating blocks of N requests between the two (so that the
shared machine's noise hits both alike), and prints the median microseconds per
request of each and the median of the per-block ratios. Loopback HTTP measurements
(bench/api_compare.py) carry the whole machine's noise; this isolates the request path.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import vxtap.api.app as api_app
from api import AK, PROJECT, SK, seed
from vxtap.auth import Credential, sign
from vxtap.store.db import Store


async def call(app: api_app.FastAPI, path: str, query: str = "") -> None:
    url = f"http://bench{path}" + (f"?{query}" if query else "")
    signed = sign("GET", url, {}, b"", AK, SK, PROJECT)
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "headers": [(k.lower().encode(), v.encode()) for k, v in signed.items()],
        "client": ("127.0.0.1", 1),
        "server": ("bench", 80),
        "root_path": "",
    }
    status: list[int] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        if message["type"] == "http.response.start":
            status.append(int(message["status"]))  # type: ignore[call-overload]

    await app(scope, receive, send)  # type: ignore[arg-type]
    if status != [200]:
        raise RuntimeError(f"{path}: {status}")


async def measure(blocks: int, requests: int) -> None:
    directory = Path(tempfile.mkdtemp(prefix="vxtap-bench-console-"))
    db_url = f"sqlite:///{directory / 'bench.db'}"
    session_id = seed(db_url, 200)
    store = Store(db_url)
    credentials = {AK: Credential(AK, SK, PROJECT)}
    apps = {"with console": api_app.create_app(store, credentials)}
    mounted = api_app.mount_console
    api_app.mount_console = lambda *_args, **_kwargs: None  # type: ignore[assignment]
    try:
        apps["without"] = api_app.create_app(store, credentials)
    finally:
        api_app.mount_console = mounted
    v3 = f"/v3/{PROJECT}/vpc/traffic-mirror-sessions"
    cases = {"show session": (f"{v3}/{session_id}", ""), "list 200 sessions": (v3, "limit=200")}
    print(
        f"command: .venv/bin/python bench/console_cost.py --blocks {blocks} --requests {requests}"
    )
    for case, (path, query) in cases.items():
        times: dict[str, list[float]] = {name: [] for name in apps}
        for app in apps.values():
            for _ in range(requests // 4):  # warm-up
                await call(app, path, query)
        for block in range(blocks):
            order = list(apps) if block % 2 == 0 else list(reversed(apps))
            for name in order:
                start = time.perf_counter()
                for _ in range(requests):
                    await call(apps[name], path, query)
                times[name].append((time.perf_counter() - start) / requests * 1e6)
        ratio = statistics.median(
            a / b for a, b in zip(times["with console"], times["without"], strict=True)
        )
        print(
            f"{case:18} with console {statistics.median(times['with console']):8.1f} us, "
            f"without {statistics.median(times['without']):8.1f} us, "
            f"per-block ratio {ratio:.3f}"
        )
    store.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--blocks", type=int, default=12)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    asyncio.run(measure(args.blocks, args.requests))


if __name__ == "__main__":
    main()
