"""The nft table `netdev vxtap`: its state, the one-transaction replace, its counters.

The state is read over netlink (`read_table_state`, `count_rules`): an `nft list
chains` process took ~30 ms at 3,000 chains, and nft 1.0.6 refuses a second `list
chain` in one batch. Changes and counter listings go through `nft` and a `Run`.
"""

from __future__ import annotations

import contextlib
import errno
import json
from collections.abc import Mapping, Sequence
from typing import Any

from vxtap.dataplane import diff
from vxtap.dataplane.kernel import netlink
from vxtap.dataplane.kernel.shell import DataplaneError, Run
from vxtap.dataplane.kernel.snapshot import Changed, TableState
from vxtap.dataplane.plan import FAMILY, MARKER_PREFIX, TABLE, KernelPlan, counter_comment

WHERE = f"{FAMILY} {TABLE}"


def read_table_state(netns: str | None) -> TableState | None:
    """What the table holds, from its chain names alone (listing 10,000 rules takes
    about a second): the chains, and from the marker chain's name the plan digest and
    the ifindexes its `dup` rules were bound to. None: there is no table."""
    with contextlib.closing(netlink.open_socket(netns, netlink.NETLINK_NETFILTER)) as sock:
        try:
            netlink.nft_request(
                sock, 1, netlink.NFT_MSG_GETTABLE, 0, netlink.attr(netlink.NFTA_TABLE_NAME, TABLE)
            )
            replies = netlink.nft_request(
                sock,
                2,
                netlink.NFT_MSG_GETCHAIN,
                netlink.NLM_F_DUMP,
                netlink.attr(netlink.NFTA_CHAIN_TABLE, TABLE),
            )
        except OSError as error:
            if error.errno == errno.ENOENT:
                return None
            raise DataplaneError(f"listing the chains of nft table {TABLE}: {error}") from None
    return table_state(netlink.chain_names(replies, TABLE))


def table_state(chains: Sequence[str]) -> TableState:
    """The state of a table with these chains."""
    digest: str | None = None
    dup_indexes: tuple[int, int] | None = None
    for name in chains:
        if name.startswith(MARKER_PREFIX):
            digest, mark_index, priority_index = name.removeprefix(MARKER_PREFIX).split("_")
            dup_indexes = (int(mark_index), int(priority_index))
    markers = tuple(c for c in chains if c.startswith(MARKER_PREFIX))
    plain = tuple(c for c in chains if not c.startswith(MARKER_PREFIX))
    return TableState(plain, markers, digest, dup_indexes)


def count_rules(netns: str | None, chains: Sequence[str]) -> dict[str, int]:
    """How many rules each named chain of the table holds (missing chains: 0).

    One netlink socket, one rule dump per chain that the kernel filters by chain, and
    only the replies counted, not decoded: one nft process per chain costs milliseconds
    each with hundreds of devices, and pyroute2 decodes every expression in Python."""
    counts = dict.fromkeys(chains, 0)
    if not counts:
        return counts
    with contextlib.closing(netlink.open_socket(netns, netlink.NETLINK_NETFILTER)) as sock:
        for seq, chain in enumerate(counts, start=1):
            attrs = netlink.attr(netlink.NFTA_RULE_TABLE, TABLE) + netlink.attr(
                netlink.NFTA_RULE_CHAIN, chain
            )
            try:
                counts[chain] = len(
                    netlink.nft_request(
                        sock, seq, netlink.NFT_MSG_GETRULE, netlink.NLM_F_DUMP, attrs
                    )
                )
            except OSError as error:
                if error.errno != errno.ENOENT:  # ENOENT: no such chain, 0 rules
                    raise DataplaneError(
                        f"listing the rules of nft chain {chain}: {error.strerror}"
                    ) from None
    return counts


def list_json(run: Run, *what: str) -> list[dict[str, Any]] | None:
    """`nft -j list ...`'s items; None when the object does not exist."""
    out = run(["nft", "-j", "list", *what])
    if out.returncode != 0:
        if "No such file or directory" in out.stderr:
            return None
        raise DataplaneError(f"nft list {' '.join(what)} failed: {out.stderr.strip()}")
    items: list[dict[str, Any]] = json.loads(out.stdout)["nftables"]
    return items


def table_exists(run: Run) -> bool:
    return list_json(run, "table", FAMILY, TABLE) is not None


def read_counters(run: Run) -> list[dict[str, Any]]:
    """The table's named counters as nft lists them (none without a table)."""
    items = list_json(run, "counters", "table", FAMILY, TABLE) or []
    return [item["counter"] for item in items if "counter" in item]


def kernel_counters(run: Run, table: TableState, applied: KernelPlan | None) -> dict[str, str]:
    """Counter name -> comment. From the plan applied last when the kernel still holds
    it (no listing needed), else listed."""
    if applied is not None and table.digest == applied.digest:
        return {c.name: counter_comment(c) for c in applied.counters}
    return {c["name"]: c.get("comment", "") for c in read_counters(run)}


def replace_ruleset(
    run: Run,
    plan: KernelPlan,
    table: TableState | None,
    dup_indexes: tuple[int, int],
    applied: KernelPlan | None,
    rule_counts: Mapping[str, int],
) -> Changed:
    """One nft transaction that makes the table hold `plan` (docs/behaviour.md §5.4: no
    gap, no duplicate; a delete-and-recreate of the table duplicated mirrors).

    When the table holds exactly `applied`, the plan this `Dataplane` applied last, only
    the chains and counters that differ are flushed and re-added (a one-session change
    among 1,000 then costs a few rules, not 10,000); otherwise the whole table is
    flushed and re-added. What it changed: the table, and the rules of the chains it
    rewrote (all of them after a full replace)."""
    mark_index, priority_index = dup_indexes
    script: list[str] | None = None
    rewritten: set[str] | None = None  # the chains whose rules the script sets; None: all
    if (
        table is not None
        and applied is not None
        and table.digest == applied.digest
        and table.dup_indexes == dup_indexes
        and set(table.chains) == {c.name for c in applied.chains}
    ):
        damaged = diff.damaged_chains(plan, table, rule_counts)
        incremental = diff.incremental(applied, plan, WHERE, damaged)
        if incremental is not None:
            script, rewritten = incremental
    if script is None:
        script = [f"add table {WHERE}", f"flush table {WHERE}"]
        if table is not None:
            wanted_chains = {c.name for c in plan.chains}
            script += [
                f"delete chain {WHERE} {name}" for name in table.chains if name not in wanted_chains
            ]
            # Counters keep their totals across re-applies; one whose meaning changed
            # (another rule id) or that the plan drops is deleted (re-added from zero).
            wanted = {c.name: counter_comment(c) for c in plan.counters}
            script += [
                f"delete counter {WHERE} {name}"
                for name, comment in sorted(kernel_counters(run, table, applied).items())
                if wanted.get(name) != comment
            ]
        script.append(plan.nft_text)
    if table is not None:
        script += [f"delete chain {WHERE} {name}" for name in table.markers]
    script.append(f"add chain {WHERE} {MARKER_PREFIX}{plan.digest}_{mark_index}_{priority_index}")
    out = run(["nft", "-f", "-"], "\n".join(script) + "\n")
    if out.returncode != 0:
        raise DataplaneError(f"nft refused the ruleset: {out.stderr.strip()[:2000]}")
    return Changed(table=True, rules=None if rewritten is None else frozenset(rewritten))


def delete_table(run: Run) -> None:
    out = run(["nft", "delete", "table", FAMILY, TABLE])
    if out.returncode != 0 and "No such file or directory" not in out.stderr:
        raise DataplaneError(f"nft delete table {FAMILY} {TABLE}: {out.stderr.strip()}")
