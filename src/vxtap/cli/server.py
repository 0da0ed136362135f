"""`vxtap server`: the API server process (stateless; all state is in the database)."""

from __future__ import annotations

import json
import logging
import os
import secrets
import sys
from pathlib import Path

import click

from vxtap.store.db import default_db_url, default_state_dir


def _listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise click.BadParameter(f"{value!r} is not HOST:PORT, e.g. 127.0.0.1:9696")
    return host.strip("[]") or "127.0.0.1", int(port)


def _first_credentials(path: Path) -> None:
    """A fresh state directory gets one generated key, so `vxtap server` works out of the box."""
    entry = {
        "ak": "VXTAP" + secrets.token_hex(8).upper(),
        "sk": secrets.token_urlsafe(30),
        "project_id": secrets.token_hex(16),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump([entry], handle, indent=2)
    click.echo(f"vxtap server: created credentials file {path} (ak {entry['ak']})", err=True)


@click.command()
@click.option(
    "--listen",
    default="127.0.0.1:9696",
    show_default=True,
    help="Address and port to serve on.",
)
@click.option(
    "--db",
    "db_url",
    default=None,
    help="Database URL: sqlite:///PATH or postgresql+psycopg://USER@HOST/DB "
    "[default: sqlite file vxtap.db in $VXTAP_STATE_DIR or /var/lib/vxtap].",
)
@click.option(
    "--credentials",
    "credentials_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help='JSON list of {"ak", "sk", "project_id"} [default: credentials.json in the state '
    "directory, created with one random key if missing].",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
def server(listen: str, db_url: str | None, credentials_path: Path | None, log_level: str) -> None:
    """Run the traffic-mirroring API server (Huawei v3 API, v1 ports, internal agent API)."""
    from vxtap.api.app import create_app
    from vxtap.api.serve import serve
    from vxtap.auth import load_credentials
    from vxtap.store.db import Store

    host, port = _listen(listen)
    if credentials_path is None:
        credentials_path = default_state_dir() / "credentials.json"
        if not credentials_path.exists():
            _first_credentials(credentials_path)
    try:
        credentials = load_credentials(credentials_path)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        store = Store(db_url or default_db_url())
        store.upgrade()
    except Exception as exc:
        raise click.ClickException(f"cannot open database: {exc}") from None
    logging.basicConfig(level=log_level.upper(), stream=sys.stderr)
    app = create_app(store, credentials)
    serve(
        app,
        app.state.held,
        host=host,
        port=port,
        log_level=log_level,
        access_log=log_level == "debug",
    )
