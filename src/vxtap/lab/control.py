"""Running vxtap's own programs in the lab, as a user would on real hosts.

`vxtap server` in the management namespace, `vxtap agent` in every server
namespace, the filters, rules and sessions created with the `vxtap` CLI (run
inside the management namespace, the only place the API is reachable from),
and `vxtap collect` on the targets during `verify`.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from vxtap.lab.certificates import TlsFiles, make_certificates
from vxtap.lab.runtime import LabDir, LabError, LabRecord, start
from vxtap.lab.scenario import Scenario
from vxtap.lab.topology import API_PORT, MGMT_SERVER_ADDRESS, Topology
from vxtap.model import DesiredState, TargetKind

VXTAP = [sys.executable, "-m", "vxtap"]
Say = Callable[[str], None]


def log_tail(path: Path | str, lines: int = 15) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join("    " + line for line in text.splitlines()[-lines:])


def _write_private(path: Path, entries: list[dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump(entries, handle, indent=2)


def agent_credentials(lab: LabDir, host: str) -> Path:
    return lab.path / "agents" / f"{host}.credentials.json"


def write_credentials(lab: LabDir, hosts: Sequence[str]) -> Path:
    """Fresh keys for this lab in the server's credentials format: the administrator's,
    and one agent key per host (each also in that host's own file, which its agent reads)."""
    path = lab.path / "credentials.json"
    admin = {
        "ak": "LAB" + secrets.token_hex(8).upper(),
        "sk": secrets.token_urlsafe(30),
        "project_id": secrets.token_hex(16),
    }
    agents = [
        {**admin, "ak": "LABH" + secrets.token_hex(8).upper(), "sk": secrets.token_urlsafe(30),
         "host": host}
        for host in hosts
    ]  # fmt: skip
    _write_private(path, [admin, *agents])
    for agent in agents:
        _write_private(agent_credentials(lab, agent["host"]), [agent])
    return path


def write_certificates(lab: LabDir) -> TlsFiles:
    """The lab's throwaway CA and the server's certificate for its management address."""
    return make_certificates(lab.path / "tls", [], [MGMT_SERVER_ADDRESS])


def console_banner(endpoint: str, namespace: str, credentials: Path, ca: Path) -> list[str]:
    """How to open the web console of a running lab: its URL (reachable from the
    management namespace only), the lab's own throwaway administrator key, and its CA."""
    key = json.loads(credentials.read_text())[0]
    url = f"{endpoint}/console"
    return [
        f"web console: {url}  (access key {key['ak']}, secret key {key['sk']};",
        f"  this lab's own key, made anew by every 'lab up' and kept in {credentials})",
        f"  the server's certificate is signed by this lab's throwaway CA {ca};",
        f"  it listens in namespace {namespace}: open it there, e.g.",
        f"  sudo ip netns exec {namespace} chromium --no-sandbox --ignore-certificate-errors {url}",
    ]


def wait_for(
    what: str, ready: Callable[[], bool], timeout: float, *, failed: Callable[[], str | None]
) -> None:
    """Poll `ready` until true; `failed` names a reason to stop early (a process died)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        reason = failed()
        if reason:
            raise LabError(f"{what}: {reason}")
        time.sleep(0.2)
    raise LabError(f"{what}: not done after {timeout:.0f} s")


def exited(proc: subprocess.Popen[bytes], log: str) -> Callable[[], str | None]:
    def check() -> str | None:
        if proc.poll() is None:
            return None
        return f"it exited with status {proc.returncode}; its log ends:\n{log_tail(log)}"

    return check


class LabProcesses:
    """Starts the lab's processes, `vxtap server` and every host's agent, in their
    namespaces, and drives the server through the CLI (resources, waits)."""

    def __init__(
        self,
        lab: LabDir,
        record: LabRecord,
        topology: Topology,
        say: Say,
        credentials: Path,
        tls: TlsFiles,
    ) -> None:
        self.lab, self.record, self.topology, self.say = lab, record, topology, say
        self.credentials = credentials
        self.tls = tls

    @property
    def env(self) -> dict[str, str]:
        return {
            "VXTAP_ENDPOINT": self.topology.endpoint,
            "VXTAP_CREDENTIALS": str(self.credentials),
            "VXTAP_CA_BUNDLE": str(self.tls.ca),
        }

    # --- processes ------------------------------------------------------------------

    def start_server(self, *, then: Callable[[], None] = lambda: None) -> None:
        """Start `vxtap server`; run `then` while it boots (agents retry until it
        answers, so starting them meanwhile saves their start-up time); return
        once it listens."""
        mgmt = self.topology.mgmt
        argv = [
            *VXTAP,
            "server",
            "--listen",
            f"{MGMT_SERVER_ADDRESS}:{API_PORT}",
            "--db",
            f"sqlite:///{self.lab.path / 'server.db'}",
            "--credentials",
            str(self.credentials),
            "--tls-cert",
            str(self.tls.cert),
            "--tls-key",
            str(self.tls.key),
        ]
        proc = start(self.lab, self.record, "server", mgmt, argv, env={"PYTHONUNBUFFERED": "1"})
        log = self.record.processes[-1].log
        self.say(
            f"[{mgmt.name}] vxtap server --listen {MGMT_SERVER_ADDRESS}:{API_PORT} "
            "--tls-cert tls/server.pem --tls-key tls/server.key"
        )

        def listening() -> bool:
            probe = ["nc", "-z", "-w", "1", MGMT_SERVER_ADDRESS, str(API_PORT)]
            return mgmt.run(probe, check=False).returncode == 0

        then()
        wait_for("vxtap server did not start", listening, 60, failed=exited(proc, log))

    def start_agents(self) -> None:
        for server in self.topology.scenario.servers:
            ns = self.topology.server(server.name)
            argv = [
                *VXTAP,
                "agent",
                "--endpoint",
                self.topology.endpoint,
                "--credentials",
                str(agent_credentials(self.lab, server.name)),
                "--cacert",
                str(self.tls.ca),
                "--state-dir",
                str(self.agent_state_dir(server.name)),
            ]
            start(self.lab, self.record, f"agent-{server.name}", ns, argv)
            self.say(
                f"[{ns.name}] vxtap agent --credentials agents/{server.name}.credentials.json "
                "--cacert tls/ca.pem"
            )

    def agent_state_dir(self, host: str) -> Path:
        return self.lab.path / "agents" / host

    # --- the CLI --------------------------------------------------------------------

    def cli(self, args: Sequence[str], *, show: bool = True) -> Any:
        """Run `vxtap ARGS --json` in the management namespace; the parsed JSON."""
        if show:
            self.say(f"  $ vxtap {shlex.join(args)}")
        mgmt = self.topology.mgmt
        env_argv = ["env", *(f"{k}={v}" for k, v in self.env.items())]
        result = mgmt.run([*env_argv, *VXTAP, *args, "--json"], check=False, timeout=60)
        if result.returncode != 0:
            raise LabError(
                f"'vxtap {shlex.join(args)}' failed: {result.stderr.strip() or result.stdout}"
            )
        return json.loads(result.stdout) if result.stdout.strip() else None

    def port_ids(self) -> dict[str, str]:
        """HOST/DEVICE -> the id of every port the agents registered."""
        ports = self.cli(["port", "list"], show=False)
        items = ports.get("ports", ports) if isinstance(ports, dict) else ports
        return {f"{p.get('binding:host_id')}/{p.get('name')}": p["id"] for p in items}

    def wait_for_ports(self) -> None:
        wanted = {s.port for s in self.topology.scenario.servers}

        def registered() -> bool:
            ports = self.cli(["port", "list"], show=False)
            items = ports.get("ports", ports) if isinstance(ports, dict) else ports
            names = {f"{p.get('binding:host_id')}/{p.get('name')}" for p in items}
            return wanted <= names

        def agent_died() -> str | None:
            for p in self.record.processes:
                if p.role.startswith("agent-") and not Path(f"/proc/{p.pid}").exists():
                    return f"{p.role} exited; its log ends:\n{log_tail(p.log)}"
            return None

        wait_for("the agents did not register their ports", registered, 60, failed=agent_died)

    def create_resources(self, scenario: Scenario) -> dict[str, str]:
        """Filters, rules, sessions through the CLI; scenario name -> assigned id."""
        ids: dict[str, str] = {}
        for flt in scenario.filters:
            created = self.cli(["filter", "create", flt.name])
            ids[flt.id] = created["id"]
            for rule in flt.rules:
                args = [
                    "rule",
                    "create",
                    "--filter",
                    ids[flt.id],
                    "--direction",
                    rule.direction.value,
                    "--priority",
                    str(rule.priority),
                    "--protocol",
                    rule.protocol.value,
                    "--action",
                    rule.action.value,
                    "--ethertype",
                    rule.ethertype.value,
                ]
                for flag, value in (
                    ("--source-cidr", rule.source_cidr),
                    ("--destination-cidr", rule.destination_cidr),
                    ("--source-ports", rule.source_ports),
                    ("--destination-ports", rule.destination_ports),
                ):
                    if value is not None:
                        args += [flag, str(value)]
                ids[rule.id] = self.cli(args)["id"]
        if scenario.groups:
            port_ids = self.port_ids()
        for group in scenario.groups:
            args = ["target-group", "create", group.name]
            for member in group.members:
                args += ["--member", port_ids[member]]
            ids[group.name] = self.cli(args)["id"]
        for session in scenario.sessions:
            args = ["session", "create", session.name, "--filter", ids[session.filter_id]]
            for source in session.sources:
                args += ["--source", source]
            if session.target_kind is TargetKind.ELB:
                args += ["--target-group", ids[session.target_id]]
            else:
                args += ["--target", session.target_id]
            args += ["--priority", str(session.priority)]
            args += ["--vni", str(session.vni), "--packet-length", str(session.packet_length)]
            args += ["--enabled" if session.enabled else "--disabled"]
            ids[session.id] = self.cli(args)["id"]
        return ids

    def wait_until_applied(self, scenario: Scenario, ids: dict[str, str]) -> None:
        """Until every source host's agent has applied its sessions, as created."""
        sources = {scenario.server_by_port(p).name for s in scenario.sessions for p in s.sources}

        def missing() -> list[str]:
            todo: list[str] = []
            for host in sorted(sources):
                path = self.agent_state_dir(host) / "desired-state.json"
                try:
                    applied = DesiredState.model_validate_json(path.read_text())
                except (OSError, ValueError):
                    todo.append(f"{host}: nothing applied yet")
                    continue
                todo += [f"{host}: {m}" for m in applied_differences(scenario, ids, host, applied)]
            return todo

        def died() -> str | None:
            for p in self.record.processes:
                if p.role.startswith("agent-") and not Path(f"/proc/{p.pid}").exists():
                    return f"{p.role} exited; its log ends:\n{log_tail(p.log)}"
            return None

        try:
            wait_for(
                "the agents did not apply the sessions", lambda: not missing(), 30, failed=died
            )
        except LabError as error:
            logs = "\n".join(
                f"  {p.role}:\n{log_tail(p.log, 8)}"
                for p in self.record.processes
                if p.role.removeprefix("agent-") in sources
            )
            raise LabError(f"{error}; still missing: {'; '.join(missing())}\n{logs}") from None


def applied_differences(
    scenario: Scenario, ids: dict[str, str], host: str, applied: DesiredState
) -> list[str]:
    """What of the scenario's sessions with a source on `host` the applied state
    lacks (pure): each session by id with its enabled flag, VNI and rules."""
    by_id = {s.id: s for s in applied.sessions}
    filters = {f.id: f for f in applied.filters}
    problems: list[str] = []
    for session in scenario.sessions:
        if not any(scenario.server_by_port(p).name == host for p in session.sources):
            continue
        got = by_id.get(ids.get(session.id, "?"))
        if got is None:
            problems.append(f"session {session.name} not applied")
            continue
        if (got.enabled, got.vni) != (session.enabled, session.vni):
            problems.append(f"session {session.name} applied with an older configuration")
        flt = filters.get(got.filter_id)
        (want,) = [f for f in scenario.filters if f.id == session.filter_id]
        if flt is None or {r.id for r in flt.rules} != {ids.get(r.id) for r in want.rules}:
            problems.append(f"filter {want.name} not applied with all its rules")
    return problems
