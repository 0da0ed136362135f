"""`vxtap db`: the store's schema, upgraded by hand (`vxtap server` refuses a database
whose schema is behind unless started with --migrate)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from vxtap.cli._api import OneLineErrorGroup
from vxtap.cli._config import config_option
from vxtap.cli.server import open_store
from vxtap.store.db import code_schema_revision, default_db_url

F = TypeVar("F", bound=Callable[..., Any])


def db_options(function: F) -> F:
    """The server's `--db`, read from the same places (server.toml, VXTAP_SERVER_DB)."""
    function = click.option(
        "--db",
        "db_url",
        default=None,
        help="Database URL, as for 'vxtap server' [default: its default].",
    )(function)
    return config_option("server")(function)


@click.group(cls=OneLineErrorGroup)
def db() -> None:
    """The database's schema: where it stands, and upgrading it."""


@db.command()
@db_options
def status(db_url: str | None) -> None:
    """Print the schema's state (empty, current, behind, unknown) and revision."""
    store = open_store(db_url or default_db_url())
    try:
        schema = store.schema()
    except Exception as exc:
        raise click.ClickException(f"cannot open database: {exc}".splitlines()[0]) from None
    finally:
        store.dispose()
    click.echo(f"{schema.state} {schema.revision or '-'} (this vxtap: {code_schema_revision()})")


@db.command()
@db_options
def upgrade(db_url: str | None) -> None:
    """Upgrade the schema to this version's (back the database up first)."""
    store = open_store(db_url or default_db_url())
    try:
        before = store.schema()
        if before.state in ("unknown", "unversioned"):
            raise click.ClickException(
                f"refusing to upgrade: the schema is {before.state} ({before.revision or '-'}); "
                "see 'vxtap db status'"
            )
        store.upgrade()
    except click.ClickException:
        raise
    except Exception as exc:
        raise click.ClickException(f"cannot upgrade the database: {exc}".splitlines()[0]) from None
    finally:
        store.dispose()
    click.echo(f"schema upgraded from {before.revision or 'empty'} to {code_schema_revision()}")
