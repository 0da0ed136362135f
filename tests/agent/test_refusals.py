"""What the agent refuses, with the real compiler and the real kernel in namespaces.

    peer .1 ══╗                     ╔══ tgt .3 (counts VXLAN at its ingress, drops it)
    src  .2 ══╬══ br0 (switch) ═════╬══ bystander .9 (the same)
              192.168.50.0/24, fd50::/64

The source host's eth0 is both the mirror source and the underlay. The agent runs
in this process (its loop driven step by step) with a stand-in server that sends
whatever desired state the test gives it: a broken or compromised server, or rows
stored before the server checked them.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from vxtap.agent.daemon import Agent
from vxtap.agent.interfaces import local_broadcasts
from vxtap.agent.metrics import AgentMetrics
from vxtap.agent.statefile import StateFile
from vxtap.client import Fetched
from vxtap.dataplane.kernel import Dataplane
from vxtap.dataplane.plan import compile_plan
from vxtap.model import (
    Action,
    Counter,
    DesiredState,
    Direction,
    EtherType,
    Filter,
    GroupMember,
    Interface,
    Port,
    Protocol,
    Rule,
    Session,
    TargetGroup,
    TargetKind,
)
from vxtap.netns import Namespace, veth
from vxtap.wire.requests import CountersRequest

pytestmark = pytest.mark.netns

SOURCE = Port(id="src", host="src", device="eth0", ipv4=("192.168.50.2",), ipv6=("fd50::2",))
TARGET = Port(id="tgt", host="tgt", device="eth0", ipv4=("192.168.50.3",))
UDP_IN = Filter(
    id="f",
    name="f",
    rules=(
        Rule(
            id="r",
            filter_id="f",
            direction=Direction.INGRESS,
            priority=1,
            action=Action.ACCEPT,
            ethertype=EtherType.IPV4,
            protocol=Protocol.UDP,
        ),
    ),
)
SINK = """
table netdev sink {
  counter vxlan {}
  chain in { type filter hook ingress device "eth0" priority 0; policy accept;
    udp dport 4789 counter name "vxlan" drop
    ip6 nexthdr udp udp dport 4789 counter name "vxlan" drop
  }
}
"""
SEND = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(20):
    s.sendto(b"production %d" % i, ("192.168.50.2", 5000))
"""


class Server:
    """Sends `state` (a new tag whenever it is replaced); accepts the rest."""

    def __init__(self, state: DesiredState) -> None:
        self.state, self.tag = state, 1

    def serve(self, state: DesiredState) -> None:
        self.state, self.tag = state, self.tag + 1

    def register_ports(self, host: str, interfaces: list[Interface]) -> list[Port]:
        return []

    def fetch_desired_state(
        self,
        host: str,
        *,
        if_none_match: str | None = None,
        wait: float | None = None,
        deadline: float | None = None,
    ) -> Fetched:
        tag = f"{self.tag}-{self.state.revision}"
        return Fetched(tag, None if if_none_match == tag else self.state)

    def report_counters(
        self,
        host: str,
        sessions: Mapping[str, Counter],
        rules: Mapping[str, Counter],
        members: Mapping[str, Counter] | None = None,
    ) -> None:
        pass

    def report_status(
        self,
        host: str,
        *,
        agent_version: str,
        applied_revision: str | None,
        apply_error: str | None,
        drift_repairs: int,
    ) -> None:
        pass


@dataclass
class Segment:
    peer: Namespace
    source: Namespace
    target: Namespace
    bystander: Namespace
    dataplane: Dataplane
    workdir: Path

    def agent(self, server: Server, metrics: AgentMetrics) -> Agent[object]:
        def in_source(argv: list[str]) -> str:
            return self.source.run(argv).stdout

        return Agent(
            host="src",
            server=server,
            kernel=self.dataplane,  # type: ignore[arg-type]
            compile_plan=compile_plan,
            read_counters=CountersRequest,
            discover=lambda: (),
            state_file=StateFile(self.workdir / "agent"),
            metrics=metrics,
            local_broadcasts=lambda: local_broadcasts(in_source),
        )

    @staticmethod
    def turn(agent: Agent[object], now: float) -> None:
        """The channel asks the server once, then the loop steps."""
        agent.channel.follow_once()
        agent.step(now)

    def target_vxlan(self) -> int:
        out = self.target.run(["nft", "-j", "list", "counter", "netdev", "sink", "vxlan"])
        return int(json.loads(out.stdout)["nftables"][1]["counter"]["packets"])

    def bystander_vxlan(self) -> int:
        out = self.bystander.run(["nft", "-j", "list", "counter", "netdev", "sink", "vxlan"])
        return int(json.loads(out.stdout)["nftables"][1]["counter"]["packets"])


@pytest.fixture
def segment(make_namespace: Callable[[str], Namespace], tmp_path: Path) -> Iterator[Segment]:
    switch = make_namespace("ag-sw")
    hosts = [make_namespace(f"ag-{role}") for role in ("peer", "src", "tgt", "by")]
    switch.run(["ip", "link", "add", "br0", "type", "bridge"])
    switch.run(["ip", "link", "set", "br0", "up"])
    for ns, last in zip(hosts, ("1", "2", "3", "9"), strict=True):
        veth(ns, "eth0", switch, f"p{last}")
        switch.run(["ip", "link", "set", f"p{last}", "master", "br0"])
        ns.run(["ip", "addr", "add", f"192.168.50.{last}/24", "dev", "eth0"])
        ns.run(["ip", "addr", "add", f"fd50::{last}/64", "dev", "eth0", "nodad"])
    peer, source, target, bystander = hosts
    for ns in (target, bystander):  # both count VXLAN at their ingress, and drop it
        ns.run(["nft", "-f", "-"], input=SINK)
    dataplane = Dataplane(netns=source.name)
    try:
        yield Segment(peer, source, target, bystander, dataplane, tmp_path)
    finally:
        with contextlib.suppress(Exception):
            dataplane.cleanup()


def session(id: str, priority: int, target: str) -> Session:
    return Session(
        id=id, name=id, filter_id="f", sources=("src",), target_id=target, priority=priority, vni=7
    )


def desired(revision: str, sessions: tuple[Session, ...], *targets: Port) -> DesiredState:
    return DesiredState(
        host="src",
        revision=revision,
        ports=(SOURCE,),
        sessions=sessions,
        filters=(UDP_IN,),
        targets=(TARGET, *targets),
    )


@pytest.mark.parametrize(
    "address",
    ["255.255.255.255", "192.168.50.255", "ff02::1"],
    ids=["limited-broadcast", "subnet-broadcast", "ipv6-all-nodes"],
)
def test_a_session_whose_target_floods_the_underlay_is_left_out(
    segment: Segment, address: str
) -> None:
    family = "ipv6" if ":" in address else "ipv4"
    flood = Port(id="flood", host="x", device="eth0", **{family: (address,)})  # type: ignore[arg-type]
    # The flooding session comes first: it would take every packet from the good one.
    state = desired("r1", (session("bad", 1, "flood"), session("good", 2, "tgt")), flood)
    metrics = AgentMetrics()
    agent = segment.agent(Server(state), metrics)
    segment.turn(agent, 0.0)
    assert agent.applied == state and agent.refused_sessions.keys() == {"bad"}
    assert metrics.refused_sessions._value.get() == 1
    segment.peer.run([sys.executable, "-c", SEND])
    time.sleep(0.3)  # the last copies arrive
    assert segment.bystander_vxlan() == 0  # nothing reached the bystander
    assert segment.target_vxlan() == 20  # the good session mirrors all of it
    nft = segment.source.run(["nft", "list", "table", "netdev", "vxtap"]).stdout
    assert address not in nft  # not even in the own-output exclusion


def test_a_state_beyond_the_limits_is_refused_and_the_kernel_keeps_the_last_good_one(
    segment: Segment, caplog: pytest.LogCaptureFixture
) -> None:
    good = desired("good", (session("good", 1, "tgt"),))
    server = Server(good)
    metrics = AgentMetrics()
    agent = segment.agent(server, metrics)
    segment.turn(agent, 0.0)
    good_plan = compile_plan(good)
    assert segment.dataplane.drift(good_plan) == []
    # 100,000 sessions on one source: the map alone could not hold them (65,536 pairs).
    huge = tuple(session(f"s{i:06d}", 1 + i % 32766, "tgt") for i in range(100_000))
    server.serve(desired("huge", huge))
    caplog.clear()
    for now in (0.3, 0.6, 0.9):
        segment.turn(agent, now)
    assert agent.applied == good and metrics.refused_states._value.get() == 1
    refusals = [
        r.getMessage() for r in caplog.records if "refusing revision huge" in r.getMessage()
    ]
    assert len(refusals) == 1 and "is a source of 100,000 sessions (at most 3)" in refusals[0]
    # The kernel shows exactly the good state (tunnel map, table, devices) and mirrors.
    assert Dataplane(netns=segment.source.name).drift(good_plan) == []
    segment.peer.run([sys.executable, "-c", SEND])
    time.sleep(0.3)
    assert segment.target_vxlan() == 20


def test_a_group_session_with_a_member_that_floods_the_underlay_is_left_out(
    segment: Segment,
) -> None:
    """The same for a session whose target is a group: one member's address is the
    source's subnet broadcast."""
    flood = Port(id="flood", host="x", device="eth0", ipv4=("192.168.50.255",))
    elb = session("bad", 1, "tg").model_copy(update={"target_kind": TargetKind.ELB})
    group = TargetGroup(id="tg", members=(GroupMember(port_id="flood", number=0),))
    state = desired("r1", (elb, session("good", 2, "tgt")), flood).model_copy(
        update={"groups": (group,)}
    )
    metrics = AgentMetrics()
    agent = segment.agent(Server(state), metrics)
    segment.turn(agent, 0.0)
    assert agent.applied == state and agent.refused_sessions == {
        "bad": "member flood of target group tg: address 192.168.50.255 is broadcast"
    }
    segment.peer.run([sys.executable, "-c", SEND])
    time.sleep(0.3)  # the last copies arrive
    assert segment.bystander_vxlan() == 0
    assert segment.target_vxlan() == 20  # the good session mirrors all of it
    nft = segment.source.run(["nft", "list", "table", "netdev", "vxtap"]).stdout
    assert "192.168.50.255" not in nft
