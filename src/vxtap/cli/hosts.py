"""`vxtap host add|remove|list|show`: enrol hosts, revoke them, see the fleet's state.

An administrator's key is needed (an agent key is refused by the server). `add`
writes the new host's credential file (mode 0600, never over an existing file):
copy it to the host and start `vxtap agent --credentials FILE` there.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import click

from vxtap import auth, enrolment
from vxtap.cli import _output as out
from vxtap.cli._api import CliError, OneLineErrorGroup, connection_options
from vxtap.client import VxtapClient
from vxtap.wire.answers import HostOut


@click.group("host", cls=OneLineErrorGroup)
def host_group() -> None:
    """Hosts: enrol an agent's host, revoke it, and see what every host applied."""


@host_group.command("add")
@click.argument("name")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the host's credential file [default: ./NAME.credentials.json].",
)
@out.json_option
@connection_options
def host_add(client: VxtapClient, as_json: bool, name: str, output: Path | None) -> None:
    """Enrol host NAME: issue its agent's key and write it to a file (mode 0600).

    The secret key is shown nowhere else; the key can do nothing but serve NAME.
    """
    path = output or Path(f"{name}.credentials.json")
    if path.exists():
        raise CliError(f"{path} exists already; remove it or choose another --output")
    credential, status = client.enrol_host(name)
    issued = auth.Credential(
        credential["ak"], credential["sk"], credential["project_id"], credential["host"]
    )
    try:
        enrolment.write_credential_file(path, issued)
    except OSError as error:
        # Enrolled, but nobody has the secret: revoke, so no unusable key stays valid.
        client.revoke_host(name)
        raise CliError(
            f"cannot write {path}: {error.strerror}; the enrolment was revoked"
        ) from None
    if as_json:
        out.print_json({**status, "credentials_file": str(path)})
    else:
        out.done(
            f"enrolled host {name} (access key {credential['ak']}); its credential file is "
            f"{path}: copy it to the host (keep mode 0600) and run "
            f"'vxtap agent --credentials {path.name}'"
        )


@host_group.command("remove")
@click.argument("name")
@connection_options
def host_remove(client: VxtapClient, name: str) -> None:
    """Revoke host NAME's agent key at once (every server refuses it from now on).

    The agent keeps mirroring its last state; the host's ports stay.
    """
    client.revoke_host(name)
    out.done(f"revoked host {name}")


@host_group.command("list")
@out.json_option
@connection_options
def host_list(client: VxtapClient, as_json: bool) -> None:
    """Every host: enrolment, agent version, last contact, desired vs applied revision."""
    out.emit(client.list_hosts(), as_json, _table)


@host_group.command("show")
@click.argument("name")
@out.json_option
@connection_options
def host_show(client: VxtapClient, as_json: bool, name: str) -> None:
    """One host in detail, with its agent's last apply error."""
    out.emit(client.show_host(name), as_json, _show)


def _show(item: HostOut) -> None:
    out.show_fields(
        [
            ("host", item["host"]),
            ("sync", item["sync"]),
            ("enrolment", item["enrolment"] or "none (reported without a key of its own)"),
            ("access key", item["access_key"] or ""),
            ("enrolled at", item["enrolled_at"] or ""),
            ("agent version", item["agent_version"] or ""),
            ("last contact", item["last_contact"] or "never"),
            ("desired revision", item["desired_revision"]),
            ("applied revision", item["applied_revision"] or ""),
            ("apply error", item["apply_error"] or ""),
            ("drift repairs", str(item["drift_repairs"])),
            ("held request", _held(item["held_request"])),
        ]
    )


def _held(value: bool | None) -> str:
    return "not known" if value is None else ("open" if value else "none")


def _table(items: Sequence[HostOut]) -> None:
    table = out.columns(
        "HOST", "SYNC", "DESIRED", "APPLIED", "LAST CONTACT", "VERSION", "REPAIRS", "ERROR"
    )
    for item in items:
        table.add_row(
            item["host"],
            item["sync"],
            item["desired_revision"],
            item["applied_revision"] or "",
            item["last_contact"] or "never",
            item["agent_version"] or "",
            str(item["drift_repairs"]),
            (item["apply_error"] or "")[:80],
        )
    out.render(table)
