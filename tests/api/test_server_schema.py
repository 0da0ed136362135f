"""`vxtap server` on a database behind its schema: refused in one line unless told to
migrate (`vxtap db upgrade`, or `--migrate`); a new, empty database is initialised."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from support.servers import free_port
from vxtap.store.db import Store, code_schema_revision


def vxtap(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vxtap", *args], capture_output=True, text=True, timeout=timeout
    )


def at_revision(url: str, revision: str) -> None:
    store = Store(url)
    try:
        store.upgrade(revision)
    finally:
        store.dispose()


def serve(url: str, credentials: Path, *extra: str) -> subprocess.Popen[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "vxtap", "server", "--listen", f"127.0.0.1:{port}", "--db", url,
         "--credentials", str(credentials), *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process.poll() is None:
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return process
        except httpx.TransportError:
            time.sleep(0.05)
    return process


def stop(process: subprocess.Popen[str]) -> str:
    if process.poll() is None:
        process.terminate()
    _, stderr = process.communicate(timeout=15)
    return stderr


@pytest.fixture
def credentials(tmp_path: Path) -> Path:
    path = tmp_path / "credentials.json"
    path.write_text('[{"ak": "AK1", "sk": "SK1", "project_id": "p1"}]')
    path.chmod(0o600)  # the server refuses a credentials file others can read
    return path


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'vxtap.db'}"
    url: str = request.getfixturevalue("pg_db")
    return url


def test_a_database_behind_is_refused_in_one_line(db_url: str, credentials: Path) -> None:
    at_revision(db_url, "0001")
    process = serve(db_url, credentials)
    assert process.wait(timeout=30) == 1
    stderr = stop(process)
    assert stderr == (
        f"Error: the database's schema is at revision 0001, this vxtap needs "
        f"{code_schema_revision()}: back it up, then run 'vxtap db upgrade' (or start the "
        "server with --migrate)\n"
    )
    assert vxtap("db", "status", "--db", db_url).stdout.startswith("behind 0001 ")


def test_db_upgrade_then_the_server_starts(db_url: str, credentials: Path) -> None:
    at_revision(db_url, "0001")
    upgraded = vxtap("db", "upgrade", "--db", db_url)
    assert upgraded.returncode == 0, upgraded.stderr
    assert upgraded.stdout == f"schema upgraded from 0001 to {code_schema_revision()}\n"
    assert vxtap("db", "status", "--db", db_url).stdout.startswith("current ")
    process = serve(db_url, credentials)
    try:
        assert process.poll() is None
    finally:
        stop(process)


def test_migrate_upgrades_at_start(db_url: str, credentials: Path) -> None:
    at_revision(db_url, "0001")
    process = serve(db_url, credentials, "--migrate")
    try:
        assert process.poll() is None
    finally:
        stderr = stop(process)
    assert f"upgraded the database schema from 0001 to {code_schema_revision()}" in stderr
    assert vxtap("db", "status", "--db", db_url).stdout.startswith("current ")


def test_an_empty_database_is_initialised(tmp_path: Path, credentials: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new.db'}"
    assert vxtap("db", "status", "--db", url).stdout.startswith("empty - ")
    process = serve(url, credentials)
    try:
        assert process.poll() is None
    finally:
        stop(process)
    assert vxtap("db", "status", "--db", url).stdout.startswith(
        f"current {code_schema_revision()} "
    )


def test_a_schema_from_a_newer_vxtap_is_refused(tmp_path: Path, credentials: Path) -> None:
    url = f"sqlite:///{tmp_path / 'newer.db'}"
    at_revision(url, "head")
    store = Store(url)
    try:
        with store.write() as session:
            session.connection().exec_driver_sql("UPDATE alembic_version SET version_num = '9999'")
    finally:
        store.dispose()
    process = serve(url, credentials, "--migrate")
    assert process.wait(timeout=30) == 1
    assert "schema is at revision 9999, which this vxtap" in stop(process)
    refused = vxtap("db", "upgrade", "--db", url)
    assert refused.returncode == 1
    assert refused.stderr.startswith("Error: refusing to upgrade: the schema is unknown (9999)")


def test_the_database_comes_from_the_config_file_and_env_wins(
    tmp_path: Path, credentials: Path
) -> None:
    from_file, from_env = tmp_path / "file.db", tmp_path / "env.db"
    config = tmp_path / "server.toml"
    config.write_text(f'db = "sqlite:///{from_file}"\n')
    env = {**os.environ, "VXTAP_SERVER_CONFIG": str(config)}
    run = [sys.executable, "-m", "vxtap", "db", "upgrade"]
    assert subprocess.run(run, env=env, capture_output=True, timeout=60).returncode == 0
    assert from_file.exists() and not from_env.exists()
    env["VXTAP_SERVER_DB"] = f"sqlite:///{from_env}"
    assert subprocess.run(run, env=env, capture_output=True, timeout=60).returncode == 0
    assert from_env.exists()
