"""A real `vxtap server` subprocess for tests: `ApiServer` and `start_api_server`
(the `api_server` fixtures of tests/conftest.py use them)."""

from __future__ import annotations

import contextlib
import json
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from vxtap.lab.certificates import TlsFiles


@dataclass
class ApiServer:
    """A real `vxtap server` subprocess (see the `api_server` fixture)."""

    endpoint: str
    ak: str
    sk: str
    project_id: str
    db_url: str
    credentials_path: Path
    log_path: Path
    process: subprocess.Popen[bytes]
    # A second key of another project, for scoping tests.
    other_ak: str
    other_sk: str
    other_project_id: str

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s; only this server's own PID."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    """A loopback port free at this moment (TCP, or UDP with `socket.SOCK_DGRAM`)."""
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_api_server(
    directory: Path,
    db_url: str | None = None,
    credentials_path: Path | None = None,
    tls: TlsFiles | None = None,
) -> ApiServer:
    """Start `vxtap server` on a free loopback port and wait until it answers.

    Without `db_url`, a fresh SQLite file in `directory`; without `credentials_path`, a new
    file with two random keys of two projects (several servers can share one file, and
    the agent signing key next to it). With `tls`, it serves HTTPS with that certificate
    (for `localhost` and 127.0.0.1); `.endpoint` is then an https:// URL.
    """
    directory.mkdir(parents=True, exist_ok=True)
    if credentials_path is None:
        credentials_path = directory / "credentials.json"
        keys = [
            {
                "ak": "AK" + secrets.token_hex(8),
                "sk": secrets.token_hex(16),
                "project_id": secrets.token_hex(16),
            }
            for _ in range(2)
        ]
        credentials_path.write_text(json.dumps(keys))
        credentials_path.chmod(0o600)
    keys = json.loads(credentials_path.read_text())
    db_url = db_url or f"sqlite:///{directory / 'vxtap.db'}"
    for _attempt in range(3):
        port = free_port()
        log_path = directory / f"server-{port}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "vxtap",
                    "server",
                    "--listen",
                    f"127.0.0.1:{port}",
                    "--db",
                    db_url,
                    "--credentials",
                    str(credentials_path),
                    "--log-level",
                    "warning",
                    *(
                        ["--tls-cert", str(tls.cert), "--tls-key", str(tls.key)]
                        if tls is not None
                        else []
                    ),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        server = ApiServer(
            endpoint=f"{'https' if tls else 'http'}://127.0.0.1:{port}",
            ak=keys[0]["ak"],
            sk=keys[0]["sk"],
            project_id=keys[0]["project_id"],
            db_url=db_url,
            credentials_path=credentials_path,
            log_path=log_path,
            process=process,
            other_ak=keys[1]["ak"],
            other_sk=keys[1]["sk"],
            other_project_id=keys[1]["project_id"],
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and process.poll() is None:
            try:
                verify: ssl.SSLContext | bool = (
                    ssl.create_default_context(cafile=str(tls.ca)) if tls else True
                )
                answer = httpx.get(f"{server.endpoint}/healthz", timeout=1, verify=verify)
                if answer.status_code == 200:
                    return server
            except httpx.TransportError:
                time.sleep(0.05)
        server.kill()
        if "address already in use" not in log_path.read_text().lower():
            break
    raise RuntimeError(f"vxtap server did not start:\n{log_path.read_text()}")


@contextlib.contextmanager
def server_pair(directory: Path, db_url: str) -> Iterator[tuple[ApiServer, ApiServer]]:
    """Two servers on one database and one credentials file, as a fleet runs them behind
    a load balancer; both stopped afterwards, also on failure."""
    first = start_api_server(directory / "one", db_url=db_url)
    try:
        second = start_api_server(
            directory / "two", db_url=db_url, credentials_path=first.credentials_path
        )
        try:
            yield first, second
        finally:
            second.stop()
    finally:
        first.stop()
