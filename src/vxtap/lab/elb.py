"""`verify` for a scenario whose session mirrors to a target group (`elb`).

The thin shell around `vxtap.lab.flows`: tcpdump on the source's eth0 (what it sent and
received on the loads' ports) and on every member's eth0 (the VXLAN copies), `vxtap
collect` on every member sending heartbeats to the server (that is what makes a member
healthy, docs/elb.md), iperf3 for the flows (the packets are the kernel's), and for the
break `collector-down` the member's collector stopped with SIGKILL by its PID mid-run and
started again. tshark decodes the pcaps; the checks are pure.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vxtap.lab import flows
from vxtap.lab.certificates import TlsFiles
from vxtap.lab.control import VXTAP, LabProcesses, agent_credentials, exited, wait_for
from vxtap.lab.runtime import (
    LabDir,
    LabError,
    LabRecord,
    ProcessRecord,
    process_start_time,
    start,
    stop,
)
from vxtap.lab.scenario import Load, Scenario
from vxtap.lab.topology import Topology
from vxtap.lab.verify import Finding
from vxtap.model import DesiredState, Protocol, TargetKind

Say = Callable[[str], None]
# Seconds of traffic: before anything happens, with a member's collector stopped (the
# failover aim is 3 s), and after it is placed again.
STEADY_S = 3.0
BEFORE_STOP_S = 1.5
STOPPED_S = 4.0
AFTER_RETURN_S = 1.5
# iperf3 runs until `verify` stops it; this only bounds a forgotten one.
IPERF_LIMIT_S = 120
# The agent reports counters at most every 5 s when they changed (docs/agent.md).
STATS_WAIT_S = 20.0


@dataclass
class _Member:
    server: str
    port_id: str
    pcap: Path
    collector_dir: Path
    collector: ProcessRecord | None = None


def _tcpdump(device_filter: list[str], pcap: Path) -> list[str]:
    # -B: a 16 MiB buffer, so that a loaded machine does not drop what the checks count.
    return ["tcpdump", "-i", "eth0", "-n", "-B", "16384", "-U", "-w", str(pcap), *device_filter]


def _load_filter(scenario: Scenario) -> list[str]:
    ports = sorted({load.port for load in scenario.loads})
    ranges = " or ".join(f"port {p}" for p in ports)
    return [f"(tcp or udp) and ({ranges}) and not udp port 4789"]


def _iperf_client(load: Load, address: str) -> list[str]:
    argv = ["iperf3", "-c", address, "-p", str(load.port), "--bidir", "-P", str(load.streams)]
    argv += ["-b", load.bitrate, "-l", str(load.length), "-t", str(IPERF_LIMIT_S)]
    return argv + (["-u"] if load.protocol is Protocol.UDP else [])


def _decode(pcap: Path, at: str, *, encapsulated: bool) -> list[flows.CapturedPacket]:
    if not pcap.exists() or pcap.stat().st_size == 0:
        return []
    argv = ["tshark", "-r", str(pcap), "-n", "-T", "fields"]
    argv += ["-E", "separator=/t", "-E", "occurrence=a", "-E", "aggregator=,"]
    for field in flows.FIELDS:
        argv += ["-e", field]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=300)
    except FileNotFoundError:
        raise LabError("tshark is not installed (apt-get install tshark)") from None
    except subprocess.CalledProcessError as error:
        raise LabError(f"tshark could not read {pcap}: {error.stderr.strip()}") from None
    return flows.parse_fields(out.stdout, at, encapsulated=encapsulated)


def _wait_written(pcaps: list[Path], *, quiet_s: float = 1.0, limit_s: float = 30.0) -> None:
    """Until no capture file has grown for `quiet_s` (tcpdump -U writes per packet)."""
    deadline = time.monotonic() + limit_s
    sizes: list[int] = []
    while time.monotonic() < deadline:
        now = [p.stat().st_size if p.exists() else 0 for p in pcaps]
        if now == sizes:
            return
        sizes = now
        time.sleep(quiet_s)


def _stored(directory: Path) -> int:
    """Frames in the collector's pcap series (any VNI)."""
    total = 0
    for pcap in sorted(directory.glob("vni*.pcap")):
        out = subprocess.run(
            ["tshark", "-r", str(pcap), "-n", "-T", "fields", "-e", "frame.number"],
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
        total += len(out.stdout.split())
    return total


class GroupVerify:
    """One run of the `elb` checks on a lab that is up."""

    def __init__(
        self,
        lab: LabDir,
        record: LabRecord,
        scenario: Scenario,
        topology: Topology,
        run_dir: Path,
        say: Say,
    ) -> None:
        self.lab, self.record, self.scenario, self.t = lab, record, scenario, topology
        self.run_dir, self.say = run_dir, say
        tls_dir = lab.path / "tls"
        tls = TlsFiles(tls_dir / "ca.pem", tls_dir / "server.pem", tls_dir / "server.key")
        self.control = LabProcesses(lab, record, topology, say, lab.path / "credentials.json", tls)
        # Figures of the run for benchmarks (seconds): the failover of a stopped member.
        self.measured: dict[str, float] = {}
        (self.session,) = [s for s in scenario.sessions if s.target_kind is TargetKind.ELB]
        self.group = scenario.target_group(self.session.target_id)
        self.source = scenario.server_by_port(self.session.sources[0])
        port_ids = self.control.port_ids()
        self.members = [
            _Member(
                scenario.server_by_port(port).name,
                port_ids[port],
                run_dir / f"tcpdump-{scenario.server_by_port(port).name}.pcap",
                run_dir / f"collect-{scenario.server_by_port(port).name}",
            )
            for port in self.group.members
        ]

    # --- processes -------------------------------------------------------------------

    def _start_collector(self, member: _Member, attempt: int) -> ProcessRecord:
        directory = (
            member.collector_dir if attempt == 0 else Path(f"{member.collector_dir}-{attempt}")
        )
        argv = [*VXTAP, "collect", "-i", "eth0", "--pcap", str(directory), "--quiet"]
        argv += ["--ring-mb", "16", "--endpoint", self.t.endpoint]
        argv += ["--credentials", str(agent_credentials(self.lab, member.server))]
        argv += ["--cacert", str(self.lab.path / "tls" / "ca.pem")]
        log = self.run_dir / f"collect-{member.server}{f'-{attempt}' if attempt else ''}.txt"
        self.say(f"[{member.server}] $ vxtap collect -i eth0 --pcap {directory.name} "
                 "--quiet --endpoint ... (heartbeats)")  # fmt: skip
        proc = start(
            self.lab,
            self.record,
            f"collect-{member.server}",
            self.t.server(member.server),
            argv,
            env={"PYTHONUNBUFFERED": "1"},
            log_path=log,
        )
        wait_for(
            f"vxtap collect on {member.server} did not start",
            lambda: "listening on" in log.read_text(errors="replace"),
            60,
            failed=exited(proc, str(log)),
        )
        return self.record.processes[-1]

    def _healthy_at_source(self) -> set[str]:
        """The member ports the source's agent has applied as healthy."""
        path = self.control.agent_state_dir(self.source.name) / "desired-state.json"
        try:
            state = DesiredState.model_validate_json(path.read_text())
        except (OSError, ValueError):
            return set()
        ids = self.record.ids
        group_id = ids.get(self.group.name)
        return {m.port_id for g in state.groups if g.id == group_id for m in g.members if m.healthy}

    def _wait_placed(self, ports: set[str], *, absent: frozenset[str] = frozenset()) -> float:
        def placed() -> bool:
            healthy = self._healthy_at_source()
            return ports <= healthy and not (absent & healthy)

        wait_for(
            f"the source's agent did not apply the members {sorted(ports)} as healthy",
            placed,
            30,
            failed=lambda: None,
        )
        return time.time()

    # --- the run ---------------------------------------------------------------------

    def run(self) -> list[Finding]:
        scenario, t = self.scenario, self.t
        self.say(f"[{self.source.name}] $ tcpdump -i eth0 -n '{_load_filter(scenario)[0]}'")
        started: list[ProcessRecord] = []
        source_pcap = self.run_dir / f"tcpdump-{self.source.name}.pcap"
        down: flows.OutageTimes | None = None
        # The judge counts packets at the source as they cross the wire: without these
        # offloads tcpdump there sees one packet where GRO merged or TSO/GSO will split
        # several, while vxtap mirrors each wire packet (docs/behaviour.md §2).
        self.t.server(self.source.name).run(
            ["ethtool", "-K", "eth0", "gro", "off", "gso", "off", "tso", "off"]
        )
        try:
            for role, server, argv, log in [
                (
                    f"tcpdump-{self.source.name}",
                    self.source.name,
                    _tcpdump(_load_filter(scenario), source_pcap),
                    self.run_dir / f"tcpdump-{self.source.name}.txt",
                ),
                *(
                    (
                        f"tcpdump-{m.server}",
                        m.server,
                        _tcpdump(["udp", "port", "4789"], m.pcap),
                        self.run_dir / f"tcpdump-{m.server}.txt",
                    )
                    for m in self.members
                ),
            ]:
                proc = start(self.lab, self.record, role, t.server(server), argv, log_path=log)
                started.append(self.record.processes[-1])
                wait_for(
                    f"tcpdump on {server} did not start",
                    lambda log=log: "listening on" in log.read_text(errors="replace"),  # type: ignore[misc]
                    30,
                    failed=exited(proc, str(log)),
                )
            for m in self.members:
                m.collector = self._start_collector(m, 0)
            self._wait_placed({m.port_id for m in self.members})
            self.say("every member is healthy and placed at the source")
            clients = self._start_loads()
            if scenario.outage is None:
                time.sleep(STEADY_S)
            else:
                down = self._outage(scenario.outage)
            for client in clients:
                stop(client)
            for p in self.record.processes:  # the servers' last packets before the captures end
                if p.role.startswith("iperf3-server-"):
                    stop(p)
            time.sleep(0.5)  # copies in flight
            # tcpdump stopped by a signal drops what it has not read yet without counting
            # it; on a loaded machine it lags behind the wire, so wait until every
            # capture file has stopped growing.
            _wait_written([source_pcap, *(m.pcap for m in self.members)])
        finally:
            for p in self.record.processes:
                if p.role.startswith(("tcpdump-", "collect-", "iperf3-")):
                    stop(p)
            self.record.processes = [
                p
                for p in self.record.processes
                if not p.role.startswith(("tcpdump-", "collect-", "iperf3-"))
            ]
            self.lab.save(self.record)
        sent = _decode(source_pcap, "", encapsulated=False)
        copies = [c for m in self.members for c in _decode(m.pcap, m.server, encapsulated=True)]
        arrived = {m.server: sum(1 for c in copies if c.at == m.server) for m in self.members}
        counted = self._counted(arrived)
        stored = {
            m.server: _stored(m.collector_dir)
            for m in self.members
            if down is None or m.server != down.member
        }
        if down is not None:
            result = flows.outage(
                copies,
                down.member,
                down.stopped,
                down.restarted,
                down.placed_again - down.restarted,
            )
            self.measured |= {
                name: value
                for name, value in (
                    ("failover_s", result.failover),
                    ("last_copy_to_stopped_s", result.out_after),
                    ("first_moved_copy_s", result.moved_after),
                    ("placed_again_s", down.placed_again - down.restarted),
                )
                if value is not None
            }
        return flows.group_findings(
            sent,
            copies,
            [m.server for m in self.members],
            flows_expected=sum(2 * load.streams for load in scenario.loads),
            counted=counted,
            stored=stored,
            down=down,
            capture_logs={
                server: (self.run_dir / f"tcpdump-{server}.txt").read_text(errors="replace")
                for server in (self.source.name, *(m.server for m in self.members))
            },
        )

    def _start_loads(self) -> list[ProcessRecord]:
        clients: list[ProcessRecord] = []
        for load in self.scenario.loads:
            server_ns = self.t.server(load.server)
            argv = ["iperf3", "-s", "-1", "-p", str(load.port)]
            log = self.run_dir / f"iperf3-server-{load.port}.txt"
            self.say(f"[{load.server}] $ {' '.join(argv)}")
            start(
                self.lab, self.record, f"iperf3-server-{load.port}", server_ns, argv, log_path=log
            )
            ss = ["ss", "-Hltn", f"sport = :{load.port}"]
            wait_for(
                f"iperf3 -s -p {load.port} on {load.server} is not listening",
                lambda ss=ss, ns=server_ns: bool(ns.run(ss, check=False).stdout.strip()),  # type: ignore[misc]
                10,
                failed=lambda: None,
            )
        for load in self.scenario.loads:
            argv = _iperf_client(load, self.scenario.server(load.server).ipv4)
            self.say(f"[{load.client}] $ {' '.join(argv)}")
            log = self.run_dir / f"iperf3-client-{load.port}.txt"
            start(
                self.lab,
                self.record,
                f"iperf3-client-{load.port}",
                self.t.server(load.client),
                argv,
                log_path=log,
            )
            clients.append(self.record.processes[-1])
        return clients

    def _outage(self, server: str) -> flows.OutageTimes:
        (member,) = [m for m in self.members if m.server == server]
        assert member.collector is not None
        time.sleep(BEFORE_STOP_S)
        if process_start_time(member.collector.pid) != member.collector.start_time:
            raise LabError(f"the collector on {server} is no longer running")
        stopped = time.time()
        os.kill(member.collector.pid, signal.SIGKILL)
        self.say(f"[{server}] collector stopped: kill -KILL {member.collector.pid}")
        self._wait_placed(
            {m.port_id for m in self.members if m is not member}, absent=frozenset({member.port_id})
        )
        self.measured["taken_out_at_source_s"] = time.time() - stopped
        self.say(
            f"the source's agent took {server} out after "
            f"{self.measured['taken_out_at_source_s']:.2f} s"
        )
        time.sleep(max(0.0, stopped + STOPPED_S - time.time()))
        stop(member.collector)
        restarted = time.time()
        member.collector = self._start_collector(member, 1)
        placed_again = self._wait_placed({m.port_id for m in self.members})
        self.say(f"[{server}] collector back; placed again {placed_again - restarted:.2f} s later")
        time.sleep(AFTER_RETURN_S)
        return flows.OutageTimes(server, stopped, restarted, placed_again)

    def _counted(self, arrived: dict[str, int]) -> dict[str, int] | None:
        """Per member, the copies `vxtap session stats` counts, once they stopped
        changing and match (or after STATS_WAIT_S)."""
        session_id = self.record.ids[self.session.id]
        latest: dict[str, int] | None = None
        deadline = time.monotonic() + STATS_WAIT_S
        while True:
            stats: Any = self.control.cli(["session", "stats", session_id], show=False)
            members = (stats or {}).get("members", {})
            latest = {
                m.server: int(members.get(f"{session_id}/{m.port_id}", {}).get("packets", 0))
                for m in self.members
            }
            if latest == arrived or time.monotonic() > deadline:
                return latest
            time.sleep(1.0)
