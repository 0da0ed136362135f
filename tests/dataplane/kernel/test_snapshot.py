"""`Changed`: what several writes changed together is what each changed."""

from __future__ import annotations

from vxtap.dataplane.kernel.snapshot import NOTHING, Changed


def test_changes_add_up() -> None:
    offloads = Changed(offloads=frozenset({"vxtap-mk0"}))
    hook = Changed(filters=frozenset({("vxtap-mk1", "ingress")}))
    assert NOTHING | offloads == offloads
    assert offloads | hook | Changed(links=True) == Changed(
        links=True,
        offloads=frozenset({"vxtap-mk0"}),
        filters=frozenset({("vxtap-mk1", "ingress")}),
    )
    assert Changed(devices=True) | NOTHING == Changed(devices=True)


def test_all_rules_changed_outweighs_some_chains() -> None:
    some = Changed(table=True, rules=frozenset({"a"}))
    assert (some | Changed(rules=frozenset({"b"}))).rules == {"a", "b"}
    assert (some | Changed(table=True, rules=None)).rules is None
    assert (Changed(rules=None) | some).rules is None
