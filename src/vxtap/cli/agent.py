"""`vxtap agent`: run the host agent, or remove every trace of it (`--cleanup`).

Thin: the options are checked here (a typo is reported before anything touches the
kernel) and `vxtap.agent.main` builds and runs the agent.
"""

from __future__ import annotations

import socket
from pathlib import Path

import click
from click.core import ParameterSource

from vxtap.cli._api import (
    ENDPOINT_HELP,
    CliError,
    ca_bundle_option,
    check_endpoint,
    credential_from_file,
)
from vxtap.cli._config import config_option
from vxtap.client import VxtapClientError, tls_context
from vxtap.logs import LogFormat, log_options, setup_logging

# Which of --endpoint and its old name --server wins when both are set: the one
# from the stronger source (flag > environment > config file), --endpoint on a tie.
_SOURCE_RANK = {
    ParameterSource.COMMANDLINE: 3,
    ParameterSource.ENVIRONMENT: 2,
    ParameterSource.DEFAULT_MAP: 1,
}


def _listen_address(text: str) -> tuple[str, int]:
    address, _, port = text.rpartition(":")
    if not address or not port.isdigit() or not 0 < int(port) < 65536:
        raise CliError(f"--metrics {text!r} is not ADDRESS:PORT, e.g. 127.0.0.1:9697")
    return address.strip("[]"), int(port)


def _endpoint(endpoint: str | None, server: str | None) -> tuple[str | None, str]:
    """The server URL and the option it came from (named in error messages)."""
    if server is None:
        return endpoint, "--endpoint"
    if endpoint is None:
        return server, "--server"
    ctx = click.get_current_context()
    sources = [ctx.get_parameter_source(name) for name in ("endpoint", "server")]
    ranks = [0 if source is None else _SOURCE_RANK.get(source, 0) for source in sources]
    return (endpoint, "--endpoint") if ranks[0] >= ranks[1] else (server, "--server")


@click.command()
@config_option("agent")
@click.option("--endpoint", envvar="VXTAP_ENDPOINT", help=ENDPOINT_HELP)
# The old name of --endpoint, hidden: existing command lines and config files keep working.
@click.option("--server", hidden=True, envvar=[])
@click.option(
    "--credentials",
    "credentials_file",
    envvar="VXTAP_CREDENTIALS",
    type=click.Path(dir_okay=False, path_type=Path),
    help="JSON list of {ak, sk, project_id, host} as 'vxtap host add' writes it (mode 0600); "
    "the first entry is used.",
)
@ca_bundle_option
@click.option(
    "--host-name",
    default=None,
    help="Host name the ports are registered under [default: the credential's host, else "
    "this machine's host name].",
)
@click.option("--metrics", "metrics_at", help="Serve Prometheus /metrics at ADDRESS:PORT.")
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the last applied state is kept [default $VXTAP_STATE_DIR/agent or "
    "/var/lib/vxtap/agent].",
)
@click.option("--cleanup", is_flag=True, help="Remove all kernel state and saved state, then exit.")
@click.option("-v", "--verbose", is_flag=True, help="Log debug details (--log-level debug).")
@log_options
def agent(
    endpoint: str | None,
    server: str | None,
    credentials_file: Path | None,
    ca_bundle: Path | None,
    host_name: str | None,
    metrics_at: str | None,
    state_dir: Path | None,
    cleanup: bool,
    verbose: bool,
    log_level: str,
    log_format: LogFormat,
) -> None:
    """Program this host's kernel to mirror what the sessions of its ports select.

    Registers the host's interfaces as ports, follows the desired state from the
    server, repairs drift, reports counters. Kernel state stays when the agent
    stops, so mirroring goes on; --cleanup removes it.
    """
    setup_logging("vxtap-agent", "debug" if verbose else log_level, log_format)
    # Imported here: the data plane needs root, `vxtap agent --help` does not.
    from vxtap.agent import main

    directory = main.state_dir(state_dir)
    if cleanup:
        main.cleanup(directory)
        click.echo("removed vxtap's kernel state and saved state")
        return
    url, option = _endpoint(endpoint, server)
    if not url:
        raise CliError("--endpoint URL is required (or set VXTAP_ENDPOINT)")
    check_endpoint(url, option)
    if credentials_file is None:
        raise CliError("--credentials FILE is required (or set VXTAP_CREDENTIALS)")
    credential = credential_from_file(credentials_file, None, None)
    if credential.host is not None and host_name not in (None, credential.host):
        raise CliError(
            f"--host-name {host_name} is not the host of the credential in {credentials_file} "
            f"({credential.host}): an agent key serves its own host only"
        )
    if url.startswith("https://"):
        try:
            tls_context(ca_bundle)  # a bad bundle is named before the kernel is touched
        except VxtapClientError as error:
            raise CliError(str(error)) from None
    settings = main.AgentSettings(
        endpoint=url,
        credential=credential,
        host=credential.host or host_name or socket.gethostname(),
        ca_bundle=ca_bundle,
        state_dir=directory,
        metrics_listen=_listen_address(metrics_at) if metrics_at else None,
    )
    try:
        main.run(settings)
    except main.StartError as error:
        raise CliError(str(error)) from None
