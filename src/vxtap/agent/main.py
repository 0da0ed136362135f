"""Build the agent from its settings and run it: the composition root.

`vxtap agent` (`vxtap.cli.agent`) parses and checks the user's input and hands
an `AgentSettings` here; this module wires the real parts together (the kernel
adapter, a plan compiler, the HTTP client, metrics, the state file) and runs the
loop until SIGTERM/SIGINT. A problem found before the loop starts is raised as
`StartError`, whose message the CLI prints as one line.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from vxtap import auth
from vxtap.agent.channel import MAX_DESIRED_STATE_BYTES
from vxtap.agent.daemon import Agent
from vxtap.agent.interfaces import discover, local_broadcasts
from vxtap.agent.metrics import AgentMetrics
from vxtap.agent.statefile import StateFile
from vxtap.client import VxtapClient, VxtapClientError
from vxtap.dataplane.kernel import Dataplane, PacketsBytes, is_own_device
from vxtap.dataplane.plan import PlanCompiler
from vxtap.model import Counter
from vxtap.wire.requests import CountersRequest

log = logging.getLogger("vxtap.agent")

DEFAULT_STATE_DIR = Path("/var/lib/vxtap")
# The loop never waits on the server (the channel has threads of its own); the short
# timeout only bounds how long a dead server keeps a request in flight.
CLIENT_TIMEOUT_S = 2.0


class StartError(Exception):
    """The agent cannot start; the message says why, in one line."""


@dataclass(frozen=True)
class AgentSettings:
    """What `vxtap agent` was told, checked."""

    endpoint: str
    credential: auth.Credential
    host: str
    ca_bundle: Path | None
    state_dir: Path
    metrics_listen: tuple[str, int] | None = None


def state_dir(option: Path | None) -> Path:
    """`--state-dir`, else `$VXTAP_STATE_DIR/agent`, else /var/lib/vxtap/agent."""
    if option is not None:
        return option
    return Path(os.environ.get("VXTAP_STATE_DIR", DEFAULT_STATE_DIR)) / "agent"


def cleanup(directory: Path) -> None:
    """Remove vxtap's kernel state and the saved state."""
    Dataplane().cleanup()
    StateFile(directory).remove()


def run(settings: AgentSettings) -> None:
    """Check what the kernel and the saved state allow, then run until a signal."""
    state_file = StateFile(settings.state_dir)
    dataplane = Dataplane()
    try:
        state_file.load()  # loaded again at start; checked here for a clear message
    except ValueError as error:
        raise StartError(f"{error}; remove it or run 'vxtap agent --cleanup'") from None
    missing = dataplane.missing_prerequisites()
    if missing:
        raise StartError("missing kernel prerequisites: " + "; ".join(missing))

    metrics = AgentMetrics()
    if settings.metrics_listen is not None:
        address, port = settings.metrics_listen
        try:
            metrics.serve(address, port)
        except OSError as error:
            shown = f"[{address}]" if ":" in address else address
            raise StartError(f"cannot serve metrics at {shown}:{port}: {error.strerror}") from None

    def read_counters() -> CountersRequest:
        return counters_for_the_server(dataplane)

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    credential = settings.credential
    try:
        client = VxtapClient(
            settings.endpoint,
            credential.ak,
            credential.sk,
            credential.project_id,
            timeout=CLIENT_TIMEOUT_S,
            max_answer_bytes=MAX_DESIRED_STATE_BYTES,
            ca_bundle=settings.ca_bundle,
        )
    except VxtapClientError as error:
        raise StartError(str(error)) from None
    with client:
        agent = Agent(
            host=settings.host,
            server=client,
            kernel=dataplane,
            compile_plan=PlanCompiler().compile,
            read_counters=read_counters,
            discover=lambda: discover(is_own_device),
            state_file=state_file,
            metrics=metrics,
            local_broadcasts=local_broadcasts,
        )
        log.info(
            "starting for host %s, server %s, state in %s",
            settings.host,
            settings.endpoint,
            state_file.path,
        )
        if auth.is_administrator(credential):
            log.warning(
                "running with an administrator's key, which can change the whole project; "
                "give this host its own key with 'vxtap host add %s' (docs/security.md)",
                settings.host,
            )
        agent.run(stop)


def counters_for_the_server(dataplane: Dataplane) -> CountersRequest:
    """The kernel's counters as the agent API reports them: per session, per rule, per
    member of a group session."""
    totals = dataplane.counters()
    none = PacketsBytes()
    sessions = {
        k: Counter(
            packets=totals.sessions.get(k, none).packets,
            bytes=totals.sessions.get(k, none).bytes,
            uncut_packets=totals.uncut.get(k, none).packets,
            uncut_bytes=totals.uncut.get(k, none).bytes,
            unplaced_packets=totals.unplaced.get(k, none).packets,
            unplaced_bytes=totals.unplaced.get(k, none).bytes,
        )
        for k in totals.sessions.keys() | totals.uncut.keys() | totals.unplaced.keys()
    }
    rules = {k: Counter(packets=v.packets, bytes=v.bytes) for k, v in totals.rules.items()}
    members = {
        f"{session}/{port}": Counter(packets=v.packets, bytes=v.bytes)
        for (session, port), v in totals.members.items()
    }
    return CountersRequest(sessions=sessions, rules=rules, members=members)
