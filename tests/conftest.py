"""Fixtures shared by the whole test tree."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from support.servers import ApiServer, start_api_server
from vxtap.lab.certificates import TlsFiles, make_certificates
from vxtap.netns import Namespace, leftover_namespaces
from vxtap.testing.namespaces import namespace_factory


@pytest.fixture
def make_namespace() -> Iterator[Callable[[str], Namespace]]:
    """Create throwaway `vxtap-<role>-xxxxxx` namespaces, removed after the test."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces")
    with namespace_factory() as make:
        yield make


_NAMESPACES_BEFORE: set[str] = set()


def pytest_sessionstart(session: pytest.Session) -> None:
    if os.geteuid() == 0:
        _NAMESPACES_BEFORE.update(leftover_namespaces())


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A namespace this run left behind is a bug in a test: fail the run and name it."""
    if os.geteuid() == 0:
        left = sorted(set(leftover_namespaces()) - _NAMESPACES_BEFORE)
        if left:
            print(f"\nLEFTOVER NAMESPACES: {left}")
            session.exitstatus = 1


@pytest.fixture(scope="session")
def api_server_factory() -> Callable[..., ApiServer]:
    """`start_api_server(directory, db_url=None, credentials_path=None)`; the caller stops it."""
    return start_api_server


@pytest.fixture
def tls_files(tmp_path: Path) -> TlsFiles:
    """A throwaway CA and a certificate for localhost and 127.0.0.1 signed by it."""
    return make_certificates(tmp_path / "tls", ["localhost"], ["127.0.0.1"])


@pytest.fixture
def api_server(tmp_path: Path) -> Iterator[ApiServer]:
    """A real `vxtap server` process with a temporary SQLite database and credentials file.

    Yields `.endpoint`, `.ak`, `.sk`, `.project_id`, `.db_url`, `.credentials_path`
    (plus `.other_*`, a key of a second project); stopped by PID afterwards, always.
    """
    server = start_api_server(tmp_path / "api-server")
    try:
        yield server
    finally:
        server.stop()


# A real PostgreSQL for the store and API tests: initdb + pg_ctl in a temporary directory.
# PostgreSQL refuses to run as root, so as root it runs as the `postgres` user (runuser).
# It listens only on a Unix socket inside the temporary directory (no TCP port), and is
# stopped and removed afterwards, also on failure.


def _as_postgres(command: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *command]
    return command


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL template of a running PostgreSQL; `{db}` is replaced per database (see `pg_db`)."""
    if shutil.which("initdb") is None or shutil.which("pg_ctl") is None:
        pytest.skip("PostgreSQL (initdb, pg_ctl) is not installed")
    directory = Path(tempfile.mkdtemp(prefix="vxtap-pg-"))
    data = directory / "data"
    if os.geteuid() == 0:
        shutil.chown(directory, "postgres", "postgres")
    run = lambda command: subprocess.run(  # noqa: E731
        _as_postgres(command), check=True, capture_output=True, text=True
    )
    try:
        run(["initdb", "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync"])
        run(
            [
                "pg_ctl",
                "-D",
                str(data),
                "-l",
                str(directory / "log"),
                "-w",
                "-t",
                "60",
                "-o",
                f"-k {directory} -c listen_addresses='' -c fsync=off -c max_connections=200",
                "start",
            ]
        )
        yield f"postgresql+psycopg://postgres@/{{db}}?host={directory}"
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run(
                _as_postgres(["pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop"]),
                capture_output=True,
            )
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def pg_db(postgres_url: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, empty database on the test PostgreSQL; its SQLAlchemy URL."""
    import psycopg

    name = "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name)[:50].lower()
    host = postgres_url.split("host=", 1)[1]
    with psycopg.connect(host=host, user="postgres", dbname="postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield postgres_url.format(db=name)
    finally:
        with psycopg.connect(
            host=host, user="postgres", dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
