"""What every CLI command that talks to `vxtap server` shares.

- `connection_options`: `--endpoint/--ak/--sk/--project-id/--credentials/--cacert`
  (or `VXTAP_ENDPOINT`, `VXTAP_AK`, `VXTAP_SK`, `VXTAP_PROJECT_ID`,
  `VXTAP_CREDENTIALS`, `VXTAP_CA_BUNDLE`), resolved into an open `VxtapClient` passed to the
  command as `client`; client errors become one `error: ...` line and exit 1.
- `CliError`: raise it for a user error; click prints it as one line.
- `OneLineErrorGroup`: a click group whose usage errors are one line too.
- `list_items`: a list command's "every page, or the one page asked for".

`vxtap explain` and the resource commands use these, so every command finds
its server and reports failures the same way.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any, TypeVar

import click

from vxtap import auth
from vxtap.client import (
    DEFAULT_ENDPOINT,
    ApiError,
    QueryValue,
    ServerUnreachable,
    VxtapClient,
    VxtapClientError,
)
from vxtap.wire.answers import Page

R = TypeVar("R")
ItemT = TypeVar("ItemT")


class CliError(click.ClickException):
    """A user error: printed as `error: <message>` on stderr, exit status 1."""

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True, file=file)


class OneLineErrorGroup(click.Group):
    """Reports its subcommands' usage errors in one line instead of click's usage block."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as error:
            where = error.ctx.command_path if error.ctx is not None else ctx.command_path
            click.echo(f"error: {error.format_message()} (see '{where} --help')", err=True)
            ctx.exit(error.exit_code)


def describe_api_error(error: ApiError) -> str:
    return f"{error.error_code}: {error.error_msg}"


def choice(values: Iterable[str]) -> click.Choice[str]:
    """A case-insensitive choice of an enum's values (the API takes any letter case)."""
    return click.Choice([str(v) for v in values], case_sensitive=False)


def where(**fields: QueryValue | None) -> dict[str, QueryValue]:
    """A list query of the options given (None: not given)."""
    return {k: v for k, v in fields.items() if v is not None}


def list_items(
    every: Callable[..., Iterator[ItemT]],
    one_page: Callable[..., Page[ItemT]],
    query: Mapping[str, QueryValue],
    *,
    limit: int | None,
    marker: str | None,
) -> list[ItemT]:
    """Every item (all pages), unless --limit or --marker asks for one page."""
    if limit is None and marker is None:
        return list(every(where=query))
    return one_page(limit=limit, marker=marker, where=query).items


def credential_from_file(path: Path, ak: str | None, project_id: str | None) -> auth.Credential:
    """The file's entry for `ak` or `project_id`, else its first; CliError naming the problem."""
    try:
        entries = auth.load_credentials(path)
    except ValueError as error:
        raise CliError(str(error)) from None
    if ak is not None:
        match = entries.get(ak)
        if match is None:
            raise CliError(f"access key {ak!r} is not in credentials file {path}")
        return match
    for credential in entries.values():
        if project_id is None or credential.project_id == project_id:
            return credential
    if project_id is not None:
        raise CliError(f"credentials file {path} has no key for project {project_id!r}")
    raise CliError(f"credentials file {path} is empty")


def resolve_credentials(
    ak: str | None, sk: str | None, project_id: str | None, credentials_file: Path | None
) -> auth.Credential:
    """Flags and environment first; a credentials file fills in what they leave out."""
    if credentials_file is not None and not (ak and sk and project_id):
        from_file = credential_from_file(credentials_file, ak, project_id)
        ak = ak or from_file.ak
        sk = sk or from_file.sk
        project_id = project_id or from_file.project_id
    missing = [
        name
        for name, value in (("--ak", ak), ("--sk", sk), ("--project-id", project_id))
        if not value
    ]
    if missing or ak is None or sk is None or project_id is None:
        raise CliError(
            f"no credentials: {', '.join(missing)} not given; pass --ak/--sk/--project-id, "
            "set VXTAP_AK/VXTAP_SK/VXTAP_PROJECT_ID, or use --credentials FILE"
        )
    return auth.Credential(ak, sk, project_id)


ca_bundle_option = click.option(
    "--cacert",
    "ca_bundle",
    envvar="VXTAP_CA_BUNDLE",
    type=click.Path(dir_okay=False, path_type=Path),
    help="PEM file of the CA(s) that signed an https:// server's certificate "
    "[env VXTAP_CA_BUNDLE; default: the system's trust store].",
)


ENDPOINT_HELP = "URL of vxtap server [env VXTAP_ENDPOINT]."


def check_endpoint(endpoint: str, option: str = "endpoint") -> None:
    if not endpoint.startswith(("http://", "https://")):
        raise CliError(f"{option} {endpoint!r} is not an http:// or https:// URL")


def connection_options(command: Callable[..., R]) -> Callable[..., R]:
    """Add the server/credential options; the command receives `client: VxtapClient`."""

    @click.option(
        "--endpoint",
        envvar="VXTAP_ENDPOINT",
        default=DEFAULT_ENDPOINT,
        show_default=True,
        help=ENDPOINT_HELP,
    )
    @click.option("--ak", envvar="VXTAP_AK", help="Access key [env VXTAP_AK].")
    @click.option("--sk", envvar="VXTAP_SK", help="Secret key [env VXTAP_SK].")
    @click.option("--project-id", envvar="VXTAP_PROJECT_ID", help="Project [env VXTAP_PROJECT_ID].")
    @click.option(
        "--credentials",
        "credentials_file",
        envvar="VXTAP_CREDENTIALS",
        type=click.Path(dir_okay=False, path_type=Path),
        help="JSON list of {ak, sk, project_id} as the server reads it; "
        "the first entry (or the one for --ak/--project-id) is used [env VXTAP_CREDENTIALS].",
    )
    @ca_bundle_option
    @functools.wraps(command)
    def wrapper(
        *args: Any,
        endpoint: str,
        ak: str | None,
        sk: str | None,
        project_id: str | None,
        credentials_file: Path | None,
        ca_bundle: Path | None,
        **kwargs: Any,
    ) -> R:
        credential = resolve_credentials(ak, sk, project_id, credentials_file)
        check_endpoint(endpoint)
        try:
            with VxtapClient(
                endpoint, credential.ak, credential.sk, credential.project_id, ca_bundle=ca_bundle
            ) as client:
                return command(*args, client=client, **kwargs)
        except ApiError as error:
            raise CliError(describe_api_error(error)) from None
        except (ServerUnreachable, VxtapClientError) as error:
            raise CliError(str(error)) from None

    return wrapper
