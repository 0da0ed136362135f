"""vxtap.store.filters on both databases: deleting a filter deletes its rules."""

from __future__ import annotations

import pytest

from support.store_world import make_world, rule_count
from vxtap.store import filters as filter_store
from vxtap.store import rules as rule_store
from vxtap.store import sessions as session_store
from vxtap.store.db import Store
from vxtap.store.errors import InUse, NotFound

# -- deleting a filter ------------------------------------------------------------------


def test_a_filter_no_session_uses_is_deleted_with_its_rules(store: Store) -> None:
    world = make_world(store)
    # While a session uses it: 409 in use, nothing deleted.
    with pytest.raises(InUse) as info:
        store.transaction(lambda db: filter_store.delete_filter(db, "p", world["filter"]))
    assert world["session"] in info.value.message
    assert rule_count(store, world["filter"]) == 2
    store.transaction(lambda db: session_store.delete_session(db, "p", world["session"]))
    store.transaction(lambda db: filter_store.delete_filter(db, "p", world["filter"]))
    assert rule_count(store, world["filter"]) == 0
    with pytest.raises(NotFound), store.read() as db:
        rule_store.get_rule(db, "p", world["ingress"])
