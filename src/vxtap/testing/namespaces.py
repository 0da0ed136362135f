"""Throwaway network namespaces named `vxtap-<role>-xxxxxx`, removed afterwards."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from vxtap.netns import Namespace, unique_name


@contextmanager
def namespace_factory() -> Iterator[Callable[[str], Namespace]]:
    """A `make(role)` that creates a uniquely named namespace; every namespace it made
    is deleted when the block ends, also on failure (the `make_namespace` fixture)."""
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
