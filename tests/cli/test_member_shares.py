"""`vxtap target-group show`'s table shares: the placement table's slots per healthy member."""

from __future__ import annotations

from vxtap.cli._output import table_shares
from vxtap.dataplane.placement import TABLE_SLOTS, build_table


def test_shares_are_the_tables_slots_in_percent() -> None:
    members = ["port-a", "port-b", "port-c"]
    shares = table_shares(members)
    assert set(shares) == set(members)
    assert abs(sum(shares.values()) - 100.0) < 1e-9
    table = build_table(members)
    for member, count in table.shares().items():
        assert shares[member] == 100.0 * count / TABLE_SLOTS
    assert all(30 < share < 37 for share in shares.values())


def test_no_healthy_member_has_no_share_and_one_has_all() -> None:
    assert table_shares([]) == {}
    assert table_shares(["only", "only"]) == {"only": 100.0}
