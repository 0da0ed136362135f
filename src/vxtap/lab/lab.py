"""`vxtap lab up|verify|down|run`: the whole procedure of the seed, on one machine."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pyroute2 import netns as _pyroute2_netns

from vxtap.lab import capture, secgroups
from vxtap.lab import scenario as scenarios
from vxtap.lab import topology as topo
from vxtap.lab.control import (
    VXTAP,
    LabProcesses,
    console_banner,
    exited,
    wait_for,
    write_certificates,
    write_credentials,
)
from vxtap.lab.elb import GroupVerify
from vxtap.lab.runtime import (
    DEFAULT_LAB_DIR,
    DEFAULT_NAMESPACE_PREFIX,
    LabDir,
    LabError,
    LabRecord,
    start,
    stop,
)
from vxtap.lab.scenario import Scenario
from vxtap.lab.traffic import converse
from vxtap.lab.verify import Finding, Mirrored, check
from vxtap.netns import Namespace

Say = Callable[[str], None]
TCPDUMP = ["tcpdump", "-i", "eth0", "udp", "port", "4789", "-nne"]  # the seed's step 3


def _collect_argv(pcap_dir: Path) -> list[str]:
    # --ring-mb 4: a few packets need no 64 MiB ring.
    return ["collect", "-i", "eth0", "--pcap", str(pcap_dir), "--print", "--ring-mb", "4"]


@dataclass(frozen=True)
class _Watch:
    """What listens on one target during a verify."""

    target: str
    tcpdump: subprocess.Popen[bytes]
    pcap: Path
    tcpdump_log: Path
    collector: subprocess.Popen[bytes]
    collector_dir: Path
    collector_log: Path


@dataclass
class Report:
    scenario: str
    findings: list[Finding] = field(default_factory=list)
    # Figures a verify measured (the elb scenario's failover times, in seconds).
    measured: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return bool(self.findings) and all(f.ok for f in self.findings)

    @property
    def failures(self) -> list[Finding]:
        return [f for f in self.findings if not f.ok]


class Lab:
    def __init__(
        self,
        directory: Path = DEFAULT_LAB_DIR,
        namespace_prefix: str = DEFAULT_NAMESPACE_PREFIX,
        say: Say = print,
    ) -> None:
        self.dir = LabDir(directory)
        self.prefix = namespace_prefix
        self.say = say

    def topology(self, scenario: Scenario) -> topo.Topology:
        return topo.Topology(self.prefix, scenario)

    # --- up -------------------------------------------------------------------------

    def up(self, scenario: Scenario, breaks: Sequence[str] = ()) -> None:
        """Build the scenario's VPC, start the control plane and agents, create
        the mirror configuration with the CLI, wait until it is applied.
        `breaks` (names in `scenario.BREAKS`) deploy it broken on purpose."""
        if self.dir.load() is not None or self._existing_namespaces():
            self.say("a previous lab is still here (crashed or not brought down): removing it")
            self.down()
        scenario = scenarios.broken(scenario, breaks)
        t = self.topology(scenario)
        record = LabRecord(
            scenario=scenario.name,
            breaks=list(breaks),
            namespace_prefix=self.prefix,
            namespaces=[ns.name for ns in t.namespaces],
            endpoint=t.endpoint,
        )
        self.dir.save(record)  # before anything exists, so `down` finds it all
        self.say(f"== {scenario.name}: {scenario.summary}")
        for name in breaks:
            self.say(f"   broken on purpose: {scenarios.BREAKS[name][1]}")
        topo.build(t, self.say)
        self.say(
            f"namespaces: {', '.join(ns.name for ns in t.namespaces)}; "
            f"security groups in {t.vpc.name} (nft table inet {secgroups.TABLE})"
        )
        for server in scenario.servers:
            self.say(f"  {secgroups.summary(scenario, server)}")
        credentials = write_credentials(self.dir, [s.name for s in scenario.servers])
        tls = write_certificates(self.dir)
        control = LabProcesses(self.dir, record, t, self.say, credentials, tls)
        control.start_server(then=control.start_agents)
        control.wait_for_ports()
        self.say(f"[{t.mgmt.name}] the mirror configuration, with the CLI:")
        record.ids = control.create_resources(scenario)
        self.dir.save(record)
        control.wait_until_applied(scenario, record.ids)
        record.ready = True
        self.dir.save(record)
        self.say("the agents applied every session")
        for line in console_banner(t.endpoint, t.mgmt.name, credentials, tls.ca):
            self.say(line)

    # --- verify ---------------------------------------------------------------------

    def verify(self, scenario: Scenario) -> Report:
        """The seed's step 3 for every conversation of the scenario, captured on
        the targets with tcpdump and `vxtap collect`; every expectation checked."""
        record = self.dir.load()
        if record is None:
            raise LabError("no lab is up: run 'vxtap lab up SCENARIO' first")
        if record.scenario != scenario.name:
            raise LabError(f"the lab that is up runs {record.scenario!r}, not {scenario.name!r}")
        if not record.ready:
            raise LabError(
                f"the lab of {record.scenario!r} is not fully up (its 'up' did not finish): "
                f"run 'vxtap lab up {record.scenario}' again"
            )
        scenario = scenarios.broken(scenario, record.breaks)
        t = self.topology(scenario)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        run_dir = next(
            d
            for n in range(1000)
            if not (d := self.dir.path / f"verify-{stamp}{f'-{n}' if n else ''}").exists()
        )
        run_dir.mkdir(parents=True)
        if scenario.groups:
            group_verify = GroupVerify(self.dir, record, scenario, t, run_dir, self.say)
            report = self._report(scenario, group_verify.run())
            report.measured = group_verify.measured
            return report
        watches: list[_Watch] = []
        try:
            for name in scenario.targets:
                watches.append(self._watch(record, t.server(name), name, run_dir))
            for w in watches:
                for what, proc, log in (
                    ("tcpdump", w.tcpdump, w.tcpdump_log),
                    ("vxtap collect", w.collector, w.collector_log),
                ):
                    wait_for(
                        f"{what} on {w.target} did not start",
                        _mentions(log, "listening on"),
                        30,
                        failed=exited(proc, str(log)),
                    )
            deliveries = [
                converse(t, scenario, talk, run_dir, self.say) for talk in scenario.traffic
            ]
            time.sleep(0.5)  # mirrors in flight
        finally:
            for p in record.processes:
                if p.role.startswith(("tcpdump-", "collect-")):
                    stop(p)
            record.processes = [
                p for p in record.processes if not p.role.startswith(("tcpdump-", "collect-"))
            ]
            self.dir.save(record)

        captured: dict[str, list[Mirrored]] = {}
        findings: list[Finding] = []
        for w in watches:
            self.say(f"\n--- {w.target}: {' '.join(TCPDUMP)}")
            self.say(w.tcpdump_log.read_text(errors="replace").rstrip())
            captured[w.target] = capture.decode_pcap(w.pcap, w.target)
            self.say(f"\n--- {w.target}: vxtap {' '.join(_collect_argv(w.collector_dir))}")
            self.say(w.collector_log.read_text(errors="replace").rstrip())
            stored = capture.decode_collector_dir(w.collector_dir, w.target)
            findings.append(_agree(w.target, captured[w.target], stored))
        dropped = topo.dropped_by_groups(t)
        findings = check(scenario, captured, deliveries, dropped) + findings
        return self._report(scenario, findings)

    def _report(self, scenario: Scenario, findings: list[Finding]) -> Report:
        report = Report(scenario.name, findings)
        self.say("")
        for finding in findings:
            self.say(str(finding))
        if report.passed:
            self.say("PASS")
        else:
            self.say(f"FAIL: {len(report.failures)} expectation(s) failed:")
            for failure in report.failures:
                self.say(f"  {failure.what}: {failure.detail}")
        return report

    def _watch(self, record: LabRecord, ns: Namespace, target: str, run_dir: Path) -> _Watch:
        """tcpdump (the seed's command, also writing a pcap) and `vxtap collect`
        on a target's eth0, each logging to its own file of this verify."""
        self.say(f"[{target}] $ {' '.join(TCPDUMP)}")
        pcap = run_dir / f"tcpdump-{target}.pcap"
        tcpdump_log = run_dir / f"tcpdump-{target}.txt"
        tcpdump = start(
            self.dir,
            record,
            f"tcpdump-{target}",
            ns,
            [*TCPDUMP, "-l", "-U", "-w", str(pcap), "--print"],
            log_path=tcpdump_log,
        )
        collector_dir = run_dir / f"collect-{target}"
        collector_log = run_dir / f"collect-{target}.txt"
        self.say(f"[{target}] $ vxtap {' '.join(_collect_argv(collector_dir))}")
        collector = start(
            self.dir,
            record,
            f"collect-{target}",
            ns,
            [*VXTAP, *_collect_argv(collector_dir)],
            env={"PYTHONUNBUFFERED": "1"},
            log_path=collector_log,
        )
        return _Watch(target, tcpdump, pcap, tcpdump_log, collector, collector_dir, collector_log)

    # --- down -----------------------------------------------------------------------

    def _candidate_namespaces(self) -> set[str]:
        """Every name this lab's prefix could have given a namespace."""
        names = {f"{self.prefix}vpc", f"{self.prefix}mgmt"}
        for s in scenarios.SCENARIOS.values():
            names |= {f"{self.prefix}{srv.name}" for srv in s.servers}
        return names

    def _existing_namespaces(self) -> list[str]:
        present = set(_pyroute2_netns.listnetns())
        return sorted(present & self._candidate_namespaces())

    def down(self) -> None:
        """Stop what the lab started and remove its namespaces and directory;
        safe after a crash or a failed `up`, and when nothing is up."""
        record = self.dir.load()
        names = set(self._existing_namespaces())
        if record is not None:
            for process in reversed(record.processes):
                stop(process)
            present = set(_pyroute2_netns.listnetns())
            names |= {n for n in record.namespaces if n in present}
        for name in sorted(names):
            Namespace(name).delete()
        self.dir.remove()
        if names:
            self.say(f"removed {len(names)} namespaces: {', '.join(sorted(names))}")

    # --- run ------------------------------------------------------------------------

    def run(self, scenario: Scenario, breaks: Sequence[str] = ()) -> Report:
        """up, verify, down; down always, also when up or verify fail."""
        try:
            self.up(scenario, breaks)
            return self.verify(scenario)
        finally:
            self.down()


def _agree(target: str, tcpdump: list[Mirrored], collector: list[Mirrored]) -> Finding:
    """The collector must have stored exactly the mirrors tcpdump saw."""
    what = f"vxtap collect on {target} stored the same {len(tcpdump)} mirrors as tcpdump saw"
    a = sorted(map(repr, map(capture.flow_key, tcpdump)))
    b = sorted(map(repr, map(capture.flow_key, collector)))
    if a == b:
        return Finding(True, what)
    return Finding(False, what, f"tcpdump saw {len(a)}, the collector stored {len(b)}")


def _mentions(log: Path, text: str) -> Callable[[], bool]:
    return lambda: text in log.read_text(errors="replace")
