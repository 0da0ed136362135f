"""A real PostgreSQL server for the store tests: initdb + pg_ctl in a temporary directory.

PostgreSQL refuses to run as root, so as root it runs as the `postgres` user
(`runuser`). It listens only on a Unix socket inside the temporary directory
(no TCP port at all), and is stopped and removed afterwards, also on failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


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
