"""Where `Dataplane.apply` spends its time at 1,000 sessions x 10 rules (agent-bench shape).

In a fresh namespace with 334 ifb source devices (as bench/agent.py): compile and apply
the state once, then time a series of one-session changes (a new VNI, as the agent
benchmark makes) and unchanged re-applies, with the time of each subprocess the data
plane runs (by command) and, with --profile, a cProfile of the changes.

Usage (as root): .venv/bin/python bench/apply_profile.py [--changes 5] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import ipaddress
import pstats
import statistics
import subprocess
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from vxtap.dataplane.kernel import Dataplane
from vxtap.dataplane.plan import PlanCompiler
from vxtap.model import (
    Action,
    DesiredState,
    Direction,
    EtherType,
    Filter,
    Port,
    PortRange,
    Protocol,
    Rule,
    Session,
)
from vxtap.netns import temporary_namespaces

SESSIONS, FILTERS, RULES = 1000, 100, 10
DEVICES = (SESSIONS + 2) // 3


def state(vni_offset: int = 0) -> DesiredState:
    filters = tuple(
        Filter(
            id=f"f{f}",
            name=f"f{f}",
            rules=tuple(
                Rule(
                    id=f"f{f}-r{r}",
                    filter_id=f"f{f}",
                    direction=Direction.INGRESS if r % 2 else Direction.EGRESS,
                    priority=r + 1,
                    action=Action.ACCEPT,
                    ethertype=EtherType.IPV4,
                    protocol=Protocol.TCP,
                    source_cidr=ipaddress.ip_network(f"10.{f}.{r}.0/24"),
                    destination_ports=PortRange(start=1000 + r, end=2000 + r),
                )
                for r in range(RULES)
            ),
        )
        for f in range(FILTERS)
    )
    ports = tuple(
        Port(id=f"p{d}", host="h", device=f"d{d}", ipv4=(f"10.98.{d // 250}.{d % 250 + 1}",))
        for d in range(DEVICES)
    )
    target = Port(id="t", host="c", device="eth0", ipv4=("10.99.0.2",))
    sessions = tuple(
        Session(
            id=f"s{i}",
            name=f"s{i}",
            filter_id=f"f{i % FILTERS}",
            sources=(f"p{i // 3}",),
            target_id="t",
            priority=i % 3 + 1,
            vni=100 + i + (vni_offset if i == 0 else 0),
        )
        for i in range(SESSIONS)
    )
    return DesiredState(
        host="h",
        revision=f"r{vni_offset}",
        ports=ports,
        sessions=sessions,
        filters=filters,
        targets=(target,),
    )


@contextmanager
def timed_subprocesses() -> Iterator[dict[str, list[float]]]:
    """Wrap subprocess.run as the data plane calls it: seconds per command name."""
    spent: dict[str, list[float]] = defaultdict(list)
    real = subprocess.run

    def run(argv: Any, *args: Any, **kwargs: Any) -> Any:
        words = [w for w in argv if w not in ("ip", "netns", "exec") and not w.startswith("vxtap-")]
        name = " ".join(words[:3])
        started = time.perf_counter()
        try:
            return real(argv, *args, **kwargs)
        finally:
            spent[name].append(time.perf_counter() - started)

    subprocess.run = run  # type: ignore[assignment]
    try:
        yield spent
    finally:
        subprocess.run = real  # type: ignore[assignment]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    with temporary_namespaces("prof") as (ns,):
        batch = "".join(f"link add d{i} type ifb\nlink set d{i} up\n" for i in range(DEVICES))
        ns.run(["ip", "-batch", "-"], input=batch)
        dp = Dataplane(netns=ns.name)
        t = time.perf_counter()
        compiler = PlanCompiler()  # one for the run, as the agent keeps one
        plan = compiler.compile(state())
        compiled = time.perf_counter() - t
        t = time.perf_counter()
        dp.apply(plan)
        first = time.perf_counter() - t
        print(f"compile {compiled * 1000:.0f} ms, first apply {first * 1000:.0f} ms")
        changes, unchanged, drifts, compiles = [], [], [], []
        profile = cProfile.Profile()
        with timed_subprocesses() as spent:
            for i in range(1, args.changes + 1):
                desired = state(vni_offset=i * 7)
                t = time.perf_counter()
                new = compiler.compile(desired)  # memoised pieces, as in the agent
                compiles.append(time.perf_counter() - t)
                t = time.perf_counter()
                if args.profile:
                    profile.enable()
                dp.apply(new)
                if args.profile:
                    profile.disable()
                changes.append(time.perf_counter() - t)
                t = time.perf_counter()
                dp.apply(new)
                unchanged.append(time.perf_counter() - t)
                t = time.perf_counter()
                assert not dp.drift(new)
                drifts.append(time.perf_counter() - t)
        dp.cleanup()
    for label, values in (
        ("compile, one session's VNI changed", compiles),
        ("apply, one session's VNI changed", changes),
        ("apply, unchanged", unchanged),
        ("drift", drifts),
    ):
        print(f"{label}: median {statistics.median(values) * 1000:.0f} ms "
              f"({', '.join(f'{v * 1000:.0f}' for v in values)})")  # fmt: skip
    print("subprocesses over all of it (count, total ms, median ms):")
    for name, values in sorted(spent.items(), key=lambda kv: -sum(kv[1])):
        print(f"  {name:30} {len(values):4} {sum(values) * 1000:8.0f} "
              f"{statistics.median(values) * 1000:7.1f}")  # fmt: skip
    if args.profile:
        pstats.Stats(profile).sort_stats("cumulative").print_stats(30)


if __name__ == "__main__":
    main()
