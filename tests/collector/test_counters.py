"""The collector's counters: series per (VNI, source), bounded, the rest folded."""

from __future__ import annotations

import pytest

from vxtap.collector.counters import OTHER, CollectorCounters
from vxtap.collector.decode import NO_VNI


def test_series_beyond_the_limit_are_folded_into_other() -> None:
    counters = CollectorCounters(max_series=3)
    with counters.lock:
        for vni in range(10):
            counters.add(vni, b"\x0a\x00\x00\x01", 2, 100, 1, 0)
        counters.add(NO_VNI, b"\x0a\x00\x00\x02", 1, 10, 0, 1)
        counters.add(1, b"\x0a\x00\x00\x01", 1, 50, 0, 0)  # an existing series still counts
    snap = counters.snapshot()
    assert [(r.vni, r.source, r.packets) for r in snap.rows] == [
        (0, "10.0.0.1", 2),
        (1, "10.0.0.1", 3),
        (2, "10.0.0.1", 2),
        (None, OTHER, 15),
    ]
    assert snap.rows[-1].other and snap.folded == 15 and snap.series == 3
    assert (snap.total("packets"), snap.total("bytes"), snap.total("malformed")) == (22, 1060, 1)


def test_no_other_row_while_nothing_was_folded() -> None:
    counters = CollectorCounters(max_series=3)
    with counters.lock:
        counters.add(1, b"\x0a\x00\x00\x01", 1, 1, 0, 0)
    snap = counters.snapshot()
    assert [r.other for r in snap.rows] == [False] and snap.folded == 0


def test_a_limit_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one counter series"):
        CollectorCounters(max_series=0)
