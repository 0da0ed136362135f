"""`vxtap server`: the API server process (stateless; all state is in the database)."""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import secrets
import ssl
from pathlib import Path

import click

from vxtap import auth, enrolment, model
from vxtap.cli._config import config_option
from vxtap.logs import LogFormat, log_options, setup_logging
from vxtap.store.db import Store, code_schema_revision, default_db_url, default_state_dir

log = logging.getLogger("vxtap.server")


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


def open_store(db_url: str) -> Store:
    try:
        return Store(db_url)
    except Exception as exc:  # the driver's own errors: shown as one line
        raise click.ClickException(f"cannot open database: {_first_line(exc)}") from None


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def prepare_schema(store: Store, *, migrate: bool) -> None:
    """A new, empty database gets the schema; one behind the code's schema is upgraded only
    when asked (an upgrade deserves a backup first); anything else is refused, in one line."""
    try:
        schema = store.schema()
        head = code_schema_revision()
        if schema.state == "empty" or (schema.state == "behind" and migrate):
            store.upgrade()
            if schema.state == "behind":
                log.info("upgraded the database schema from %s to %s", schema.revision, head)
            return
    except Exception as exc:
        raise click.ClickException(f"cannot open database: {_first_line(exc)}") from None
    if schema.state == "behind":
        raise click.ClickException(
            f"the database's schema is at revision {schema.revision}, this vxtap needs {head}: "
            "back it up, then run 'vxtap db upgrade' (or start the server with --migrate)"
        )
    if schema.state == "unknown":
        raise click.ClickException(
            f"the database's schema is at revision {schema.revision}, which this vxtap "
            f"(schema {head}) does not know: a newer vxtap wrote it; install that version"
        )
    if schema.state == "unversioned":
        raise click.ClickException(
            "the database has vxtap's tables but no schema revision (no alembic_version "
            "table): it was not made by 'vxtap server' or 'vxtap db upgrade'"
        )


def is_loopback(host: str) -> bool:
    """True when `host` (an address or a name) only listens where this machine can reach."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _tls_files(cert: Path | None, key: Path | None) -> None:
    """Check the certificate and key now, so a wrong file is one clear line at start."""
    if (cert is None) != (key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    if cert is None or key is None:
        return
    try:
        auth.check_private(key, "TLS key file")
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except FileNotFoundError as exc:
        raise click.ClickException(f"cannot read {exc.filename}: {exc.strerror}") from None
    except (ssl.SSLError, OSError) as exc:
        raise click.ClickException(
            f"--tls-cert {cert} / --tls-key {key}: not a PEM certificate and its key ({exc})"
        ) from None


@click.command()
@config_option("server")
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
    help='JSON list of {"ak", "sk", "project_id"} (administrators) and '
    '{"ak", "sk", "project_id", "host"} (host agents), mode 0600 [default: credentials.json '
    "in the state directory, created with one random key if missing].",
)
@click.option(
    "--agent-key",
    "agent_key_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Key that enrolled hosts' secrets derive from; every server of one database needs "
    f"the same [default: {enrolment.SIGNING_KEY_FILE} next to the credentials file, created "
    "if missing].",
)
@click.option(
    "--tls-cert",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Serve HTTPS with this PEM certificate (chain); needs --tls-key.",
)
@click.option(
    "--tls-key",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The certificate's PEM private key (mode 0600).",
)
@click.option(
    "--migrate",
    is_flag=True,
    help="Upgrade a database whose schema is behind this version before serving "
    "(without it the server refuses to start on one; a new, empty database is always "
    "initialised).",
)
@click.option(
    "--max-rules-per-direction",
    type=click.IntRange(1, 65535),
    default=model.DEFAULT_MAX_RULES_PER_DIRECTION,
    show_default=True,
    help="Quota of rules per filter and direction (409 VPC.2903 beyond it); every packet is "
    "compared with the rules ahead of the one that decides.",
)
@log_options
def server(
    listen: str,
    db_url: str | None,
    credentials_path: Path | None,
    migrate: bool,
    agent_key_path: Path | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    max_rules_per_direction: int,
    log_level: str,
    log_format: LogFormat,
) -> None:
    """Run the traffic-mirroring API server (Huawei v3 API, v1 ports, internal agent API)."""
    from vxtap.api.app import create_app
    from vxtap.api.serve import serve

    setup_logging("vxtap-server", log_level, log_format)
    host, port = _listen(listen)
    _tls_files(tls_cert, tls_key)
    if credentials_path is None:
        credentials_path = default_state_dir() / "credentials.json"
        if not credentials_path.exists():
            _first_credentials(credentials_path)
    try:
        credentials = auth.load_credentials(credentials_path)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    store = open_store(db_url or default_db_url())
    prepare_schema(store, migrate=migrate)
    agent_key_path = agent_key_path or credentials_path.with_name(enrolment.SIGNING_KEY_FILE)
    try:
        agent_key, created = enrolment.load_signing_key(agent_key_path, create=True)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    if created:
        log.info("created agent signing key %s", agent_key_path)
    if tls_cert is None and not is_loopback(host):
        log.warning(
            "serving plain HTTP on %s, which is not a loopback address: signatures can be "
            "replayed and desired states read by anyone on the network; use --tls-cert and "
            "--tls-key (docs/security.md)",
            host,
        )
    app = create_app(
        store,
        credentials,
        agent_signing_key=agent_key,
        max_rules_per_direction=max_rules_per_direction,
    )
    serve(
        app,
        app.state.held,
        host=host,
        port=port,
        log_level=log_level,
        log_config=None,  # vxtap.logs' handlers: one line per event, text or JSON
        access_log=log_level == "debug",
        ssl_certfile=None if tls_cert is None else str(tls_cert),
        ssl_keyfile=None if tls_key is None else str(tls_key),
    )
