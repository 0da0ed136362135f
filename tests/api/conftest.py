"""Fixtures for the API tests: one real server per test package, the official SDK client,
raw signed requests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from support.api import ApiServer, Raw, vpc_client


@pytest.fixture(scope="package")
def server(
    tmp_path_factory: pytest.TempPathFactory, api_server_factory: Callable[..., ApiServer]
) -> Iterator[ApiServer]:
    """One server shared by the package's tests (each test makes its own resources)."""
    started = api_server_factory(tmp_path_factory.mktemp("api"))
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
def vpc(server: ApiServer) -> Any:
    return vpc_client(server.endpoint, server.ak, server.sk, server.project_id)


@pytest.fixture
def raw(server: ApiServer) -> Raw:
    return Raw(server)
