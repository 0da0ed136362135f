"""What the fleet view (`vxtap host list`) costs: `host_statuses` over N hosts.

    .venv/bin/python bench/fleet_status.py [--hosts N] [--rounds R]

Fills a temporary SQLite database through the store functions (N hosts, each with
one registered port, one session mirroring it to a shared target, an enrolment and
a status report), then times `vxtap.store.hosts.host_statuses` of every host, R
times, in one read transaction each: `cold` with no state known (every host's state
built), then `warm` with the content revisions the cold call remembered (as a server
has them once it answered its agents). Prints each round, the medians and the load.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from vxtap.model import TargetKind
from vxtap.store import filters as filter_store
from vxtap.store import hosts
from vxtap.store import ports as port_store
from vxtap.store import sessions as session_store
from vxtap.store.db import Store
from vxtap.store.filters import FilterSpec
from vxtap.store.ports import PortSpec
from vxtap.store.sessions import SessionSpec

PROJECT = "bench"


def fill(store: Store, count: int) -> None:
    with store.write() as db:
        target = port_store.create_port(
            db, PROJECT, "target", PortSpec(device="eth0", ipv4=("10.0.0.1",))
        )
        flt = filter_store.create_filter(db, PROJECT, FilterSpec("f", ""))
        for i in range(count):
            host = f"h{i}"
            address = f"10.{1 + i // 62500}.{i // 250 % 250}.{i % 250 + 1}"
            [port] = port_store.register_host_ports(
                db, PROJECT, host, [PortSpec(device="eth0", ipv4=(address,))]
            )
            session_store.create_session(
                db,
                PROJECT,
                SessionSpec(
                    name=f"s{i}",
                    filter_id=flt.id,
                    sources=(port.id,),
                    target_id=target.id,
                    target_kind=TargetKind.ENI,
                    vni=1,
                    priority=1,
                ),
            )
            hosts.enrol_host(db, PROJECT, host, f"AK{i}")
            hosts.put_status(
                db,
                PROJECT,
                host,
                {"agent_version": "0.1.0", "applied_revision": "x", "drift_repairs": 0},
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        store = Store(f"sqlite:///{Path(directory) / 'fleet.db'}")
        store.upgrade()
        fill(store, args.hosts)
        took: dict[str, list[float]] = {"cold": [], "warm": []}
        for _ in range(args.rounds):
            built: hosts.StateRevisions = {}
            for kind in ("cold", "warm"):  # warm: the states' revisions known (`built`)
                started = time.perf_counter()
                with store.read() as db:
                    listed = hosts.host_statuses(db, PROJECT, {}, built=built)
                took[kind].append(time.perf_counter() - started)
                assert len(listed) == args.hosts
                print(f"{args.hosts} hosts, {kind}: {took[kind][-1] * 1000:.1f} ms")
        store.dispose()
    for kind, values in took.items():
        print(f"{kind}: median {statistics.median(values) * 1000:.1f} ms")
    print(f"load {os.getloadavg()[0]:.1f}")
    print(f"command: .venv/bin/python bench/fleet_status.py --hosts {args.hosts}")


if __name__ == "__main__":
    main()
