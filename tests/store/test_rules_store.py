"""vxtap.store.rules on both databases: the rules quota per filter and direction."""

from __future__ import annotations

import threading

import pytest

from support.store_world import rule_count, rule_fields
from vxtap import model
from vxtap.store import filters as filter_store
from vxtap.store import rules as rule_store
from vxtap.store.db import Store
from vxtap.store.errors import Conflict, QuotaExceeded
from vxtap.store.filters import FilterSpec

# -- the rules quota --------------------------------------------------------------------


def test_rules_per_filter_and_direction_stop_at_the_quota(store: Store) -> None:
    quota = model.DEFAULT_MAX_RULES_PER_DIRECTION
    with store.write() as db:
        filter_id = filter_store.create_filter(db, "p", FilterSpec("full")).id
        for priority in range(1, quota + 1):
            rule_store.create_rule(db, "p", rule_fields(filter_id, "ingress", priority))
    with pytest.raises(QuotaExceeded) as info:
        store.transaction(
            lambda db: rule_store.create_rule(db, "p", rule_fields(filter_id, "ingress", 9999))
        )
    assert f"has {quota} ingress rules" in info.value.message
    assert rule_count(store, filter_id) == quota
    # The other direction has its own quota; a smaller quota counts the same rows.
    store.transaction(
        lambda db: rule_store.create_rule(db, "p", rule_fields(filter_id, "egress", 1))
    )
    with pytest.raises(QuotaExceeded):
        store.transaction(
            lambda db: rule_store.create_rule(
                db, "p", rule_fields(filter_id, "egress", 2), quota=1
            ),
        )


def test_the_rules_quota_holds_under_concurrent_creates(store: Store) -> None:
    """No constraint holds the quota: the project's change counter, which every rule
    write takes first, serializes the count and the insert."""
    with store.write() as db:
        filter_id = filter_store.create_filter(db, "p", FilterSpec("raced")).id
    outcomes: list[str] = []

    def create(priority: int) -> None:
        try:
            store.transaction(
                lambda db: rule_store.create_rule(
                    db, "p", rule_fields(filter_id, "ingress", priority), quota=5
                ),
            )
            outcomes.append("created")
        except Conflict as refusal:
            outcomes.append(type(refusal).__name__)

    threads = [threading.Thread(target=create, args=(p,)) for p in range(1, 17)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["QuotaExceeded"] * 11 + ["created"] * 5
    assert rule_count(store, filter_id) == 5
