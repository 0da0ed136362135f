"""`kernel.nftables`' one-transaction replace on recorded nft behaviour (no root): the
script it sends, and what it says it changed. The namespace tests load the same scripts
(tests/dataplane/test_kernel.py, both ways of loading end in the same table)."""

from __future__ import annotations

import json

import pytest
from recorded_run import Recorded

from support.dataplane_lan import rule, session, state
from vxtap.dataplane.kernel import DataplaneError, nftables
from vxtap.dataplane.kernel.snapshot import Changed, TableState
from vxtap.dataplane.plan import KernelPlan, compile_plan, counter_comment
from vxtap.model import Filter, Protocol

LOAD = "nft -f -"
LIST_COUNTERS = "nft -j list counters table netdev vxtap"
UDP = Filter(id="f", name="f", rules=(rule("f-udp", 1, protocol=Protocol.UDP),))
TCP = Filter(id="g", name="g", rules=(rule("g-tcp", 1, protocol=Protocol.TCP),))


def plan(*sessions: tuple[str, str, int], revision: str = "1") -> KernelPlan:
    return compile_plan(
        state([UDP, TCP], [session(s, f, vni, vni=vni) for s, f, vni in sessions], revision)
    )


def holding(p: KernelPlan, dup_indexes: tuple[int, int] = (4, 6)) -> TableState:
    """The table as the kernel shows it once `p` was loaded."""
    marker = f"plan_{p.digest}_{dup_indexes[0]}_{dup_indexes[1]}"
    return nftables.table_state([*(c.name for c in p.chains), marker])


def full_counts(p: KernelPlan) -> dict[str, int]:
    return {c.name: c.rules for c in p.chains if c.hook is not None}


def test_the_marker_chain_gives_the_digest_and_the_dup_indexes() -> None:
    assert nftables.table_state(["a", "plan_0123abcd_4_6", "b"]) == TableState(
        ("a", "b"), ("plan_0123abcd_4_6",), "0123abcd", (4, 6)
    )
    assert nftables.table_state([]) == TableState((), (), None, None)


def test_no_table_yet_gets_the_whole_plan_in_one_transaction() -> None:
    new = plan(("s", "f", 1))
    run = Recorded()
    changed = nftables.replace_ruleset(run, new, None, (4, 6), None, {})
    assert changed == Changed(table=True, rules=None)  # every chain's rules are new
    assert run.commands == [LOAD]  # nothing listed
    script = (run.stdins[0] or "").splitlines()
    assert script[:2] == ["add table netdev vxtap", "flush table netdev vxtap"]
    assert script[-1] == f"add chain netdev vxtap plan_{new.digest}_4_6"
    assert "\n".join(script[2:-1]) == new.nft_text


def test_a_table_holding_the_last_plan_gets_only_what_differs() -> None:
    old = plan(("s", "f", 1), ("t", "g", 2))
    new = plan(("s", "f", 1), ("t", "g", 3), revision="2")  # t's VNI only
    run = Recorded()
    changed = nftables.replace_ruleset(run, new, holding(old), (4, 6), old, full_counts(old))
    assert run.commands == [LOAD]
    script = (run.stdins[0] or "").splitlines()
    assert "flush table netdev vxtap" not in script
    assert changed.table and changed.rules is not None
    assert changed.rules < {c.name for c in new.chains}  # not every chain
    assert script[-2:] == [
        f"delete chain netdev vxtap plan_{old.digest}_4_6",
        f"add chain netdev vxtap plan_{new.digest}_4_6",
    ]


def test_a_damaged_base_chain_is_refilled_on_the_incremental_path() -> None:
    old = plan(("s", "f", 1))
    base = next(c.name for c in old.chains if c.hook is not None)
    counts = {**full_counts(old), base: 0}  # flushed by hand
    run = Recorded()
    changed = nftables.replace_ruleset(run, old, holding(old), (4, 6), old, counts)
    assert changed.rules == {base}
    assert f"flush chain netdev vxtap {base}" in (run.stdins[0] or "")


def test_a_re_created_copy_device_reloads_every_rule() -> None:
    old = plan(("s", "f", 1))
    run = Recorded()
    changed = nftables.replace_ruleset(run, old, holding(old), (9, 6), old, full_counts(old))
    assert changed == Changed(table=True, rules=None)  # `dup to` bound the old ifindex
    assert (run.stdins[0] or "").endswith(f"add chain netdev vxtap plan_{old.digest}_9_6\n")


def test_an_unknown_table_has_its_counters_listed_and_changed_ones_deleted() -> None:
    new = plan(("s", "f", 1))
    foreign = nftables.table_state(["other", "plan_ffff_4_6"])
    kept, changed = new.counters[0], new.counters[1]
    listed = [
        {"counter": {"name": kept.name, "comment": counter_comment(kept)}},
        {"counter": {"name": changed.name, "comment": "rule s another-rule"}},
        {"counter": {"name": "gone", "comment": "rule x y"}},
    ]
    run = Recorded({LIST_COUNTERS: json.dumps({"nftables": listed})})
    nftables.replace_ruleset(run, new, foreign, (4, 6), None, {})
    assert run.commands == [LIST_COUNTERS, LOAD]
    script = (run.stdins[1] or "").splitlines()
    assert "delete chain netdev vxtap other" in script
    assert "delete chain netdev vxtap plan_ffff_4_6" in script
    deleted = [line.rsplit(" ", 1)[1] for line in script if line.startswith("delete counter")]
    assert deleted == sorted([changed.name, "gone"])  # kept keeps its totals


def test_nft_refusing_the_script_is_an_error_with_its_message() -> None:
    run = Recorded(refused={LOAD: "Error: Could not process rule: No such file or directory"})
    with pytest.raises(DataplaneError, match="nft refused the ruleset: Error: Could not"):
        nftables.replace_ruleset(run, plan(("s", "f", 1)), None, (4, 6), None, {})
