from __future__ import annotations

from collections.abc import Callable

import pytest

from vxtap.netns import Namespace, leftover_namespaces, temporary_namespaces, veth


def test_names_must_carry_the_prefix() -> None:
    with pytest.raises(ValueError, match="vxtap-"):
        Namespace("other")


def test_veth_connects_two_namespaces(make_namespace: Callable[[str], Namespace]) -> None:
    a, b = make_namespace("a"), make_namespace("b")
    veth(a, "a0", b, "b0")
    a.run(["ip", "addr", "add", "10.99.0.1/24", "dev", "a0"])
    b.run(["ip", "addr", "add", "10.99.0.2/24", "dev", "b0"])
    out = a.run(["ping", "-c", "1", "-W", "2", "10.99.0.2"])
    assert "1 received" in out.stdout


def test_temporary_namespaces_are_removed_when_the_body_fails(
    make_namespace: Callable[[str], Namespace],
) -> None:
    names: list[str] = []
    with pytest.raises(RuntimeError), temporary_namespaces("t1", "t2") as created:
        names = [ns.name for ns in created]
        assert set(names) <= set(leftover_namespaces())
        raise RuntimeError("boom")
    assert not set(names) & set(leftover_namespaces())
