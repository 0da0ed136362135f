"""docs/deploy.md's steps that the hosts test does not take: the openssl commands of
"Certificates" as written, and "Backups" of the SQLite store with its key files."""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from support.deploy import guide_block
from vxtap.client import ApiError, VxtapClient
from vxtap.lab.certificates import TlsFiles


def vxtap(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("VXTAP_")}
    return subprocess.run(
        [sys.executable, "-m", "vxtap", *args],
        capture_output=True, text=True, timeout=60, env={**clean, **env},
    )  # fmt: skip


def test_the_guides_openssl_commands_make_a_certificate_the_clients_trust(
    tmp_path: Path, api_server_factory: Callable[..., Any]
) -> None:
    commands = guide_block("Certificates", "NAME=")
    # As written, with the test's name and address in place of the example's.
    first, rest = commands.split("\n", 1)
    assert first.startswith("NAME=control.example ADDRESS=10.0.0.1")
    made = subprocess.run(
        ["bash", "-euc", "NAME=localhost ADDRESS=127.0.0.1\n" + rest],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert made.stdout == "server.pem: OK\n"
    assert (tmp_path / "server.key").stat().st_mode & 0o077 == 0  # the guide's umask 077
    tls = TlsFiles(tmp_path / "ca.pem", tmp_path / "server.pem", tmp_path / "server.key")
    server = api_server_factory(tmp_path / "server", tls=tls)
    try:
        env = {"VXTAP_ENDPOINT": server.endpoint, "VXTAP_CREDENTIALS": str(server.credentials_path)}
        listed = vxtap("filter", "list", "--json", env={**env, "VXTAP_CA_BUNDLE": str(tls.ca)})
        assert (listed.returncode, listed.stderr) == (0, ""), listed.stderr
        # Python 3.13 verifies strictly by default (RFC 5280's rules): accepted too.
        strict = ssl.create_default_context(cafile=str(tls.ca))
        strict.verify_flags |= ssl.VERIFY_X509_STRICT
        assert httpx.get(f"{server.endpoint}/healthz", verify=strict).status_code == 200
        # Without the deployment's CA, the system's trust store does not vouch for it.
        untrusted = vxtap("filter", "list", env=env)
        assert untrusted.returncode == 1 and "certificate is not trusted" in untrusted.stderr
    finally:
        server.stop()


def test_a_backup_with_the_key_files_restores_the_enrolled_hosts(
    tmp_path: Path, api_server_factory: Callable[..., Any]
) -> None:
    state = tmp_path / "state"
    server = api_server_factory(state)
    signing_key = state / "agent-signing.key"
    try:
        with VxtapClient(server.endpoint, server.ak, server.sk, server.project_id) as admin:
            issued, _ = admin.enrol_host("web1")
        assert signing_key.exists()
        # The guide's backup, the server running: sqlite3 .backup and the two key files.
        backup = tmp_path / "backup"
        backup.mkdir(mode=0o700)
        subprocess.run(
            ["sqlite3", str(state / "vxtap.db"), f".backup '{backup / 'vxtap.db'}'"], check=True
        )
        subprocess.run(["cp", "-p", str(server.credentials_path), str(signing_key), str(backup)],
                       check=True)  # fmt: skip
    finally:
        server.stop()

    def desired_state_on(restored: Path) -> object:
        again = api_server_factory(
            restored, db_url=f"sqlite:///{restored / 'vxtap.db'}",
            credentials_path=restored / "credentials.json",
        )  # fmt: skip
        try:
            agent = VxtapClient(again.endpoint, issued["ak"], issued["sk"], issued["project_id"])
            with agent:
                try:
                    return agent.desired_state("web1")
                except ApiError as error:
                    return error.status
        finally:
            again.stop()

    whole = tmp_path / "restored"
    shutil.copytree(backup, whole)
    assert not isinstance(desired_state_on(whole), int)  # the host's key works
    # Without agent-signing.key a new one is made, and the host's key is worthless.
    partial = tmp_path / "restored-without-the-signing-key"
    shutil.copytree(backup, partial)
    (partial / "agent-signing.key").unlink()
    assert desired_state_on(partial) == 401
    assert json.loads((partial / "credentials.json").read_text())  # the admin key is there
