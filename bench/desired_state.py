"""The server's build of one host's desired state at 1,000 sessions x 10 rules, in process.

The store is filled like bench/agent.py fills it through the API (334 ports of one
host, 100 filters of 10 rules, 1,000 sessions, 3 per port), in a SQLite file, then
`agent_view.desired_state` is timed in one read transaction per build, as the
desired-state endpoint runs it after a change.

Usage: .venv/bin/python bench/desired_state.py [--builds 7] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import tempfile
import time
from pathlib import Path

from vxtap import model
from vxtap.store import agent_view
from vxtap.store import filters as filter_store
from vxtap.store import ports as port_store
from vxtap.store import rules as rule_store
from vxtap.store import sessions as session_store
from vxtap.store.db import Store
from vxtap.store.filters import FilterSpec
from vxtap.store.ports import PortSpec
from vxtap.store.rules import RuleSpec
from vxtap.store.sessions import SessionSpec

PROJECT, HOST = "bench", "bench-host"


def fill(store: Store) -> None:
    with store.write() as db:
        interfaces = [
            PortSpec(device=f"d{i}", ipv4=(f"10.98.{i // 250}.{i % 250 + 1}",)) for i in range(334)
        ]
        ports = {
            p.device: p.id for p in port_store.register_host_ports(db, PROJECT, HOST, interfaces)
        }
        target = port_store.create_port(
            db, PROJECT, "collector", PortSpec(device="eth0", ipv4=("10.99.0.2",))
        )
        filters = []
        for f in range(100):
            flt = filter_store.create_filter(db, PROJECT, FilterSpec(f"bench-{f}"))
            for r in range(10):
                rule_store.create_rule(db, PROJECT, RuleSpec(
                    filter_id=flt.id, priority=r + 1,
                    direction=model.Direction.INGRESS if r % 2 else model.Direction.EGRESS,
                    action=model.Action.ACCEPT, ethertype=model.EtherType.IPV4,
                    protocol=model.Protocol.TCP, source_cidr=f"10.{f}.{r}.0/24",
                    destination_ports=f"{1000 + r}-{2000 + r}",
                ))  # fmt: skip
            filters.append(flt.id)
        for i in range(1000):
            session_store.create_session(db, PROJECT, SessionSpec(
                name=f"bench-{i}", filter_id=filters[i % 100], sources=(ports[f"d{i // 3}"],),
                target_id=target.id, target_kind=model.TargetKind.ENI,
                priority=i % 3 + 1, vni=100 + i,
            ))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--builds", type=int, default=7)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        store = Store(f"sqlite:///{Path(work) / 'db.sqlite'}")
        store.upgrade()
        fill(store)
        times = []
        for _ in range(args.builds):
            started = time.perf_counter()
            with store.read_rows() as db:
                state = agent_view.desired_state(db, PROJECT, HOST)
            times.append(time.perf_counter() - started)
        print(
            f"desired_state, {len(state['sessions'])} sessions: median "
            f"{statistics.median(times) * 1000:.0f} ms "
            f"({', '.join(f'{t * 1000:.0f}' for t in times)})"
        )
        if args.profile:
            profile = cProfile.Profile()
            with store.read_rows() as db:
                profile.runcall(agent_view.desired_state, db, PROJECT, HOST)
            pstats.Stats(profile).sort_stats("cumulative").print_stats(25)
        store.dispose()


if __name__ == "__main__":
    main()
