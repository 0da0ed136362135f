"""vxtap.store.db: how Store.transaction answers integrity errors."""

from __future__ import annotations

import pytest
from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from support.store_world import make_world, rule_count
from vxtap.store import common
from vxtap.store.db import Store
from vxtap.store.schema import RuleRow


def test_an_integrity_error_is_never_answered_as_a_concurrent_change(store: Store) -> None:
    """A violation no check words is a bug in the checks: raised (500, logged), not a 409
    asking the client to retry what can never succeed."""
    world = make_world(store)
    attempts: list[int] = []

    def insert_rule(db: Session, filter_id: str | None) -> None:
        attempts.append(1)
        db.execute(
            insert(RuleRow),
            {
                "id": common.new_id(),
                "project_id": "p",
                "filter_id": filter_id,
                "direction": "ingress",
                "priority": 7,
                "action": "accept",
                "ethertype": "IPv4",
                "protocol": "ALL",
                "description": "",
                "created_at": common.utc_now(),
                "updated_at": common.utc_now(),
            },
        )

    # NOT NULL: no retry can cure it.
    with pytest.raises(IntegrityError):
        store.transaction(lambda db: insert_rule(db, None))
    assert len(attempts) == 1
    # A reference missing at the write: retried (the checks then word it), and if the
    # write itself is wrong, raised after the retries.
    attempts.clear()
    with pytest.raises(IntegrityError):
        store.transaction(lambda db: insert_rule(db, "no-such-filter"))
    assert len(attempts) == 5
    assert rule_count(store, world["filter"]) == 2
