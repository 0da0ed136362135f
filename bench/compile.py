"""The plan compiler alone: a cold compile and warm ones (one session's VNI changed)
at 1,000 sessions x 10 rules, as the agent compiles after a one-session change.

Usage: .venv/bin/python bench/compile.py LABEL [--changes 5]
Prints the plan's digest, so that two source trees can be checked to compile the
same plan byte for byte (run each with its own PYTHONPATH, alternately).
"""

from __future__ import annotations

import argparse
import ipaddress
import random
import statistics
import time
from collections.abc import Callable

from vxtap.dataplane import plan
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

SESSIONS = 1000
RULES = 10
TARGET = Port(id="tgt", host="t", device="eth9", ipv4=("10.9.9.9",))


def state(change: int) -> DesiredState:
    """The same 1,000 sessions each time, but for session 0's VNI."""
    rng = random.Random(7)
    filters, sessions, ports = [], [], []
    for i in range(SESSIONS):
        rules = tuple(
            Rule(
                id=f"r{i}-{j}",
                filter_id=f"f{i}",
                direction=Direction.INGRESS,
                priority=j + 1,
                action=rng.choice(list(Action)),
                ethertype=EtherType.IPV4,
                protocol=Protocol.TCP,
                source_cidr=ipaddress.ip_network(f"10.{i % 250}.{j}.0/24"),
                destination_ports=PortRange(start=1000 + j, end=2000 + j),
            )
            for j in range(RULES)
        )
        filters.append(Filter(id=f"f{i}", name=f"f{i}", rules=rules))
        ports.append(
            Port(id=f"p{i}", host="h", device=f"d{i}", ipv4=(f"10.1.{i // 250}.{i % 250}",))
        )
        vni = i + change if i == 0 else i
        sessions.append(
            Session(
                id=f"s{i}",
                name=f"s{i}",
                filter_id=f"f{i}",
                sources=(f"p{i}",),
                target_id=TARGET.id,
                priority=1,
                vni=vni,
            )
        )
    return DesiredState(
        host="h",
        revision=f"r{change}",
        ports=tuple(ports),
        sessions=tuple(sessions),
        filters=tuple(filters),
        targets=(TARGET,),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("label")
    parser.add_argument("--changes", type=int, default=5)
    args = parser.parse_args()
    states = [state(change) for change in range(args.changes + 1)]
    # The agent's compiler: a PlanCompiler where there is one (before issue 10, the
    # module-level compile_plan kept its memo in module globals).
    compiler = getattr(plan, "PlanCompiler", None)
    compile_: Callable[[DesiredState], plan.KernelPlan] = (
        compiler().compile if compiler is not None else plan.compile_plan
    )
    started = time.perf_counter()
    first = compile_(states[0])
    cold = time.perf_counter() - started
    warm = []
    for desired in states[1:]:
        started = time.perf_counter()
        compile_(desired)
        warm.append(time.perf_counter() - started)
    print(
        f"{args.label}: cold {cold * 1000:.0f} ms, warm median {statistics.median(warm) * 1000:.0f}"
        f" ms, digest {first.digest}"
    )


if __name__ == "__main__":
    main()
