"""Flow placement: balance, movement and build time of the placement table, N = 2..16.

vxtap's table (rendezvous hashing per slot, vxtap.dataplane.placement) side by side with
Maglev's fill (Eisenbud et al., NSDI 2016, section 3.4; written out below for the
comparison), both with 65,537 slots and the same member ids, over 10,000 synthetic
flows hashed by the mirror program's flow hash (its Python twin). Build times are
interleaved (one of each per round) and reported as medians. Finally the sampling noise
of 10,000 flows alone: how often a random set of 10,000 flows is spread worse than 1.1
max/mean at some N in 2..16, for each table.

  PYTHONPATH=src .venv/bin/python bench/placement.py
"""

from __future__ import annotations

import argparse
import hashlib
import random
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence

from vxtap.dataplane.placement import TABLE_SLOTS, FlowKey, build_table, flow_hash

Table = list[str]  # slot -> member id


def rendezvous(members: Sequence[str]) -> Table:
    table = build_table(members)
    return [table.members[index] for index in table.slots]


def maglev(members: Sequence[str]) -> Table:
    """Maglev's population (its Pseudocode 1), members in sorted order."""
    ordered = sorted(set(members))
    slots = TABLE_SLOTS

    def digest(member: str, salt: bytes) -> int:
        data = hashlib.blake2b(member.encode(), digest_size=8, person=salt).digest()
        return int.from_bytes(data, "little")

    offsets = [digest(m, b"offset") % slots for m in ordered]
    skips = [digest(m, b"skip") % (slots - 1) + 1 for m in ordered]
    following = [0] * len(ordered)
    owner = [-1] * slots
    filled = 0
    while True:
        for index in range(len(ordered)):
            offset, skip, step = offsets[index], skips[index], following[index]
            slot = (offset + step * skip) % slots
            while owner[slot] >= 0:
                step += 1
                slot = (offset + step * skip) % slots
            following[index] = step + 1
            owner[slot] = index
            filled += 1
            if filled == slots:
                return [ordered[index] for index in owner]


def synthetic_hashes(count: int, seed: int) -> list[int]:
    """Flow hashes of random IPv4/IPv6 TCP/UDP/ICMP flows."""
    rng = random.Random(seed)
    hashes = []
    for _ in range(count):
        size = rng.choice((4, 16))
        addresses = rng.randbytes(size), rng.randbytes(size)
        protocol = rng.choice((6, 17, 1 if size == 4 else 58))
        ports = None
        if protocol in (6, 17):
            ports = rng.randrange(32768, 61000), rng.randrange(1, 65536)
        hashes.append(flow_hash(FlowKey(addresses, protocol, ports)))
    return hashes


def imbalance(table: Table, hashes: Sequence[int], size: int) -> float:
    counts = Counter(table[h % TABLE_SLOTS] for h in hashes)
    return max(counts.values()) / (len(hashes) / size)


def slot_imbalance(table: Table, size: int) -> float:
    return max(Counter(table).values()) / (TABLE_SLOTS / size)


def movement(before: Table, after: Table, hashes: Sequence[int], changed: str) -> tuple[float, int]:
    """(flows moved / flows, flows that moved without `changed` being either end)."""
    moved = [h for h in hashes if before[h % TABLE_SLOTS] != after[h % TABLE_SLOTS]]
    stray = sum(
        1 for h in moved if changed not in (before[h % TABLE_SLOTS], after[h % TABLE_SLOTS])
    )
    return len(moved) / len(hashes), stray


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--flows", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--noise-trials", type=int, default=100)
    args = parser.parse_args()
    ids = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"vxtap-collector-{n}")) for n in range(17)]
    builders: dict[str, Callable[[Sequence[str]], Table]] = {
        "rendezvous": rendezvous,
        "maglev": maglev,
    }
    hashes = synthetic_hashes(args.flows, seed=1)
    print(f"{args.flows} flows, {TABLE_SLOTS} slots")
    print(
        "N  | slots max/mean rdv mag | flows max/mean rdv mag | remove one: moved (1/N) "
        "stray rdv mag | add one: moved (1/(N+1)) stray rdv mag | build ms rdv mag"
    )
    tables: dict[str, dict[int, Table]] = {name: {} for name in builders}
    for size in range(2, 17):
        members, leaving, joining = ids[:size], ids[size // 2], ids[size]
        times: dict[str, list[float]] = {name: [] for name in builders}
        row: dict[str, dict[str, float]] = {}
        for round_ in range(args.rounds):
            order = list(builders) if round_ % 2 else list(reversed(builders))
            for name in order:
                start = time.perf_counter()
                builders[name](members)
                times[name].append(time.perf_counter() - start)
        for name, build in builders.items():
            table = tables[name][size] = build(members)
            smaller = build([m for m in members if m != leaving])
            larger = build([*members, joining])
            removed, removed_stray = movement(table, smaller, hashes, leaving)
            added, added_stray = movement(table, larger, hashes, joining)
            row[name] = {
                "slots": slot_imbalance(table, size),
                "flows": imbalance(table, hashes, size),
                "removed": removed,
                "removed_stray": removed_stray,
                "added": added,
                "added_stray": added_stray,
                "ms": 1000 * statistics.median(times[name]),
            }
        r, m = row["rendezvous"], row["maglev"]
        print(
            f"{size:2} | {r['slots']:.3f} {m['slots']:.3f} | {r['flows']:.3f} {m['flows']:.3f} | "
            f"{r['removed']:.4f} ({1 / size:.4f}) {r['removed_stray']:.0f} "
            f"{m['removed_stray']:.0f} | {r['added']:.4f} ({1 / (size + 1):.4f}) "
            f"{r['added_stray']:.0f} {m['added_stray']:.0f} | {r['ms']:.1f} {m['ms']:.1f}"
        )
    print(f"sampling noise, {args.noise_trials} random sets of {args.flows} flows:")
    for name in builders:
        worst = []
        for trial in range(args.noise_trials):
            sample = synthetic_hashes(args.flows, seed=1000 + trial)
            worst.append(max(imbalance(tables[name][n], sample, n) for n in range(2, 17)))
        over = sum(1 for value in worst if value > 1.1) / len(worst)
        print(
            f"  {name}: worst max/mean over N = 2..16: median {statistics.median(worst):.3f}, "
            f"above 1.1 in {100 * over:.0f} % of the sets"
        )


if __name__ == "__main__":
    main()
