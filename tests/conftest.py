"""Fixtures shared by the whole test tree."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from vxtap.netns import Namespace, leftover_namespaces, unique_name


@pytest.fixture
def make_namespace() -> Iterator[Callable[[str], Namespace]]:
    """Create throwaway `vxtap-<role>-xxxxxx` namespaces, removed after the test."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces")
    created: list[Namespace] = []

    def make(role: str) -> Namespace:
        ns = Namespace.create(unique_name(role))
        created.append(ns)
        return ns

    try:
        yield make
    finally:
        for ns in created:
            ns.delete()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A namespace left behind by any test is a bug in that test: say so loudly."""
    if os.geteuid() == 0:
        left = [n for n in leftover_namespaces() if not n.startswith("vxtap-lab")]
        if left:
            print(f"\nLEFTOVER NAMESPACES: {left}")
            session.exitstatus = 1
