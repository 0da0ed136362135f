"""`vxtap agent`: run the host agent, or remove every trace of it (`--cleanup`)."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from pathlib import Path
from types import FrameType

import click

from vxtap import auth
from vxtap.cli._api import CliError, ca_bundle_option
from vxtap.cli._config import config_option
from vxtap.client import Counter, VxtapClient, VxtapClientError, tls_context
from vxtap.logs import LogFormat, log_options, setup_logging

DEFAULT_STATE_DIR = Path("/var/lib/vxtap")
CLIENT_TIMEOUT_S = 2.0


def _state_dir(option: Path | None) -> Path:
    if option is not None:
        return option
    return Path(os.environ.get("VXTAP_STATE_DIR", DEFAULT_STATE_DIR)) / "agent"


def _listen_address(text: str) -> tuple[str, int]:
    address, _, port = text.rpartition(":")
    if not address or not port.isdigit() or not 0 < int(port) < 65536:
        raise CliError(f"--metrics {text!r} is not ADDRESS:PORT, e.g. 127.0.0.1:9697")
    return address.strip("[]"), int(port)


@click.command()
@config_option("agent")
@click.option("--server", envvar="VXTAP_ENDPOINT", help="URL of vxtap server [env VXTAP_ENDPOINT].")
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
    from vxtap.agent.channel import MAX_DESIRED_STATE_BYTES
    from vxtap.agent.daemon import Agent
    from vxtap.agent.interfaces import discover, local_broadcasts
    from vxtap.agent.metrics import AgentMetrics
    from vxtap.agent.statefile import StateFile
    from vxtap.dataplane.kernel import Dataplane, PacketsBytes, is_own_device
    from vxtap.dataplane.plan import PlanCompiler

    state_file = StateFile(_state_dir(state_dir))
    dataplane = Dataplane()
    if cleanup:
        dataplane.cleanup()
        state_file.remove()
        click.echo("removed vxtap's kernel state and saved state")
        return
    # The user's input first: a typo is reported before anything touches the kernel.
    if not server:
        raise CliError("--server URL is required (or set VXTAP_ENDPOINT)")
    if not server.startswith(("http://", "https://")):
        raise CliError(f"--server {server!r} is not an http:// or https:// URL")
    if credentials_file is None:
        raise CliError("--credentials FILE is required (or set VXTAP_CREDENTIALS)")
    try:
        credential = next(iter(auth.load_credentials(credentials_file).values()), None)
    except ValueError as error:
        raise CliError(str(error)) from None
    if credential is None:
        raise CliError(f"credentials file {credentials_file} is empty")
    if credential.host is not None and host_name not in (None, credential.host):
        raise CliError(
            f"--host-name {host_name} is not the host of the credential in {credentials_file} "
            f"({credential.host}): an agent key serves its own host only"
        )
    host_name = credential.host or host_name or socket.gethostname()
    if server.startswith("https://"):
        try:
            tls_context(ca_bundle)  # a bad bundle is named before the kernel is touched
        except VxtapClientError as error:
            raise CliError(str(error)) from None
    listen = _listen_address(metrics_at) if metrics_at else None
    try:
        state_file.load()  # loaded again at start; checked here for a clear message
    except ValueError as error:
        raise CliError(f"{error}; remove it or run 'vxtap agent --cleanup'") from None
    missing = dataplane.missing_prerequisites()
    if missing:
        raise CliError("missing kernel prerequisites: " + "; ".join(missing))

    metrics = AgentMetrics()
    if listen is not None:
        address, port = listen
        try:
            metrics.serve(address, port)
        except OSError as error:
            raise CliError(f"cannot serve metrics at {metrics_at}: {error.strerror}") from None

    def read_counters() -> tuple[dict[str, Counter], dict[str, Counter]]:
        totals = dataplane.counters()
        none = PacketsBytes()
        sessions = {
            k: Counter(
                packets=totals.sessions.get(k, none).packets,
                bytes=totals.sessions.get(k, none).bytes,
                uncut_packets=totals.uncut.get(k, none).packets,
                uncut_bytes=totals.uncut.get(k, none).bytes,
            )
            for k in totals.sessions.keys() | totals.uncut.keys()
        }
        rules = {k: Counter(packets=v.packets, bytes=v.bytes) for k, v in totals.rules.items()}
        return sessions, rules

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # The loop never waits on the server (the channel has threads of its own); the short
    # timeout only bounds how long a dead server keeps a request in flight.
    try:
        client = VxtapClient(
            server,
            credential.ak,
            credential.sk,
            credential.project_id,
            timeout=CLIENT_TIMEOUT_S,
            max_answer_bytes=MAX_DESIRED_STATE_BYTES,
            ca_bundle=ca_bundle,
        )
    except VxtapClientError as error:
        raise CliError(str(error)) from None
    with client:
        daemon = Agent(
            host=host_name,
            server=client,
            kernel=dataplane,
            compile_plan=PlanCompiler().compile,
            read_counters=read_counters,
            discover=lambda: discover(is_own_device),
            state_file=state_file,
            metrics=metrics,
            local_broadcasts=local_broadcasts,
        )
        agent_log = logging.getLogger("vxtap.agent")
        agent_log.info(
            "starting for host %s, server %s, state in %s", host_name, server, state_file.path
        )
        if auth.is_administrator(credential):
            agent_log.warning(
                "running with an administrator's key, which can change the whole project; "
                "give this host its own key with 'vxtap host add %s' (docs/security.md)",
                host_name,
            )
        daemon.run(stop)
