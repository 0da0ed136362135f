"""The agent's loop wiring, without root: a recording server and kernel stand in for the real ones.

The namespace tests (test_daemon.py) run the real thing end to end; these pin the
loop's behaviour in the corner cases that are slow or hard to provoke there.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from vxtap.agent.channel import BACKOFF_MAX_S, HOLD_S, REPORT_INTERVAL_S, STATUS_INTERVAL_S
from vxtap.agent.daemon import COUNTERS_INTERVAL_S, NO_CHANGES, Agent
from vxtap.agent.decide import APPLY_RETRY_S
from vxtap.agent.events import Changes
from vxtap.agent.metrics import AgentMetrics
from vxtap.agent.statefile import StateFile
from vxtap.client import ApiError, Fetched, ServerUnreachable
from vxtap.model import Counter, DesiredState, Interface, Port, Session
from vxtap.wire.requests import CountersRequest


class Server:
    """Answers like `vxtap server`: ETag "<change counter>-<revision>"; a tag naming the
    current counter or the current revision gets None (304)."""

    def __init__(self) -> None:
        self.counter = 0
        self.state = DesiredState(host="h", revision="r1")
        self.down = False
        self.revoked = False
        self.registered: list[list[Interface]] = []
        self.reports = 0
        self.asked_with: list[tuple[str | None, float | None]] = []  # (If-None-Match, wait)
        # Each status report: (applied revision, apply error, drift repairs).
        self.statuses: list[tuple[str | None, str | None, int]] = []

    @property
    def state(self) -> DesiredState:
        return self._state

    @state.setter
    def state(self, state: DesiredState) -> None:
        self._state, self.counter = state, self.counter + 1

    def _check(self) -> None:
        if self.down:
            raise ServerUnreachable("http://server", "connection refused")
        if self.revoked:
            raise ApiError(401, "VPC.0008", "unknown access key 'AK'")

    def register_ports(self, host: str, interfaces: list[Interface]) -> list[Port]:
        self._check()
        self.registered.append(interfaces)
        return [Port(id=f"id-{i.device}", host=host, device=i.device) for i in interfaces]

    def fetch_desired_state(
        self,
        host: str,
        *,
        if_none_match: str | None = None,
        wait: float | None = None,
        deadline: float | None = None,
    ) -> Fetched:
        self._check()
        self.asked_with.append((if_none_match, wait))
        tag = f"{self.counter}-{self.state.revision}"
        if if_none_match is not None and if_none_match.rpartition("-")[2] == self.state.revision:
            return Fetched(tag, None)
        return Fetched(tag, self.state)

    def report_counters(
        self,
        host: str,
        sessions: Mapping[str, Counter],
        rules: Mapping[str, Counter],
        members: Mapping[str, Counter] | None = None,
    ) -> None:
        self._check()
        self.reports += 1

    def report_status(
        self,
        host: str,
        *,
        agent_version: str,
        applied_revision: str | None,
        apply_error: str | None,
        drift_repairs: int,
    ) -> None:
        self._check()
        self.statuses.append((applied_revision, apply_error, drift_repairs))


class Kernel:
    """Holds the revision it was last made to show; `broken` makes apply fail."""

    def __init__(self) -> None:
        self.shows: str | None = None
        self.applies: list[str] = []
        self.broken = False

    def apply(self, plan: str) -> None:
        if self.broken:
            raise RuntimeError("nft: Could not process rule")
        self.applies.append(plan)
        self.shows = plan

    def drift(self, plan: str) -> list[str]:
        return [] if self.shows == plan else [f"kernel shows {self.shows}, not {plan}"]


Parts = tuple[Server, Kernel, StateFile, list[tuple[Interface, ...]]]


@pytest.fixture
def parts(tmp_path: Path) -> Parts:
    interfaces: list[tuple[Interface, ...]] = [(Interface(device="eth0", ipv4=("10.0.0.1",)),)]
    return Server(), Kernel(), StateFile(tmp_path / "state"), interfaces


def make_agent(parts: Parts) -> Agent[str]:
    server, kernel, state_file, interfaces = parts
    return Agent(
        host="h",
        server=server,
        kernel=kernel,
        compile_plan=lambda state: state.revision,  # the plan is the revision, for the fake
        read_counters=lambda: CountersRequest(sessions={"s": Counter(packets=1, bytes=2)}),
        discover=lambda: interfaces[-1],
        state_file=state_file,
        metrics=AgentMetrics(),
    )


def turn(agent: Agent[str], now: float, changes: Changes = NO_CHANGES) -> None:
    """What the threads do, one after the other: the channel talks, the loop steps."""
    agent.channel.send_once(now)
    agent.channel.follow_once()
    agent.step(now, changes)
    agent.channel.send_once(now)


def test_follows_revisions_and_saves_them(parts: Parts) -> None:
    server, kernel, state_file, _ = parts
    agent = make_agent(parts)
    agent.start()
    turn(agent, 0.0)
    assert kernel.applies == ["r1"] and state_file.load() == server.state
    turn(agent, 0.3)
    assert kernel.applies == ["r1"]  # unchanged revision: no apply
    server.state = DesiredState(host="h", revision="r2")
    turn(agent, 0.6)
    assert kernel.applies == ["r1", "r2"]
    # Each request names the tag of the last answer; the first one none, and is not held.
    assert server.asked_with == [(None, None), ("1-r1", HOLD_S), ("1-r1", HOLD_S)]
    turn(agent, 0.9)
    assert server.asked_with[-1] == ("2-r2", HOLD_S) and kernel.applies == ["r1", "r2"]
    assert server.registered == [[Interface(device="eth0", ipv4=("10.0.0.1",))]]
    assert server.reports == 1


def test_counters_are_reported_when_they_changed_and_not_too_often(parts: Parts) -> None:
    server, _, _, _ = parts
    totals = {"s": Counter(packets=1, bytes=2)}
    agent = make_agent(parts)
    agent.read_counters = lambda: CountersRequest(sessions=dict(totals))
    agent.start()
    turn(agent, 0.0)
    assert server.reports == 1
    turn(agent, COUNTERS_INTERVAL_S)  # read again, unchanged: not sent
    assert server.reports == 1
    totals["s"] = Counter(packets=5, bytes=9)
    agent.counters.last = None
    turn(agent, COUNTERS_INTERVAL_S + 0.1)  # changed: sent
    assert server.reports == 2
    totals["s"] = Counter(packets=6, bytes=10)
    agent.counters.last = None
    turn(agent, COUNTERS_INTERVAL_S + 0.2)  # changed again, but too soon after that report
    assert server.reports == 2
    agent.channel.send_once(COUNTERS_INTERVAL_S + 0.1 + REPORT_INTERVAL_S)
    assert server.reports == 3


def test_restart_leaves_a_matching_kernel_alone_and_repairs_one_that_differs(parts: Parts) -> None:
    server, kernel, _, _ = parts
    first = make_agent(parts)
    first.start()
    turn(first, 0.0)
    server.down = True  # the restarted agent must manage on the saved state alone
    make_agent(parts).start()
    assert kernel.applies == ["r1"]
    kernel.shows = None  # e.g. after a reboot
    make_agent(parts).start()
    assert kernel.applies == ["r1", "r1"]


def test_after_a_restart_the_content_revision_asks_until_the_server_names_a_tag(
    parts: Parts,
) -> None:
    server, kernel, _, _ = parts
    first = make_agent(parts)
    first.start()
    turn(first, 0.0)
    server.asked_with.clear()
    restarted = make_agent(parts)
    restarted.start()
    turn(restarted, 10.0)
    turn(restarted, 10.3)
    # Bare revision first (held: the agent has a state), then the server's tag.
    assert server.asked_with == [("r1", HOLD_S), ("1-r1", HOLD_S)]
    assert kernel.applies == ["r1"]


def test_server_down_keeps_the_kernel_and_backs_off(parts: Parts) -> None:
    server, kernel, _, _ = parts
    server.down = True
    agent = make_agent(parts)
    agent.start()
    turn(agent, 0.0)
    assert kernel.applies == [] and agent.channel.reachable is False
    delays = [agent.channel.follow_once() for _ in range(8)]
    assert all(0.0 < d <= BACKOFF_MAX_S for d in delays)
    assert delays[-1] >= BACKOFF_MAX_S / 2 > delays[0]  # grows, with jitter, up to a ceiling
    server.down = False
    turn(agent, 1.0)
    assert kernel.applies == ["r1"] and len(server.registered) == 1
    assert agent.channel.reachable is True
    # The first request after failures is not held: it must show the server is back.
    server.down = True
    agent.channel.follow_once()
    server.down = False
    agent.channel.follow_once()
    agent.channel.follow_once()
    assert [wait for _, wait in server.asked_with[-2:]] == [None, HOLD_S]


def test_a_failed_apply_is_retried_later_without_asking_again(parts: Parts) -> None:
    _, kernel, state_file, _ = parts
    kernel.broken = True
    agent = make_agent(parts)
    agent.start()
    turn(agent, 0.0)
    turn(agent, 0.3)
    assert kernel.applies == [] and agent.failed is not None and agent.pending is not None
    kernel.broken = False
    agent.step(0.6)
    assert kernel.applies == []  # still inside the retry delay
    assert agent.next_due(0.6) <= APPLY_RETRY_S
    agent.step(APPLY_RETRY_S + 0.5)
    assert kernel.applies == ["r1"] and state_file.load() is not None
    assert agent.pending is None


def test_drift_and_interface_changes(parts: Parts) -> None:
    server, kernel, _, interfaces = parts
    agent = make_agent(parts)
    agent.start()
    turn(agent, 0.0)
    kernel.shows = None  # someone deleted the table
    agent.step(0.05, Changes(nftables=True))
    assert kernel.applies == ["r1", "r1"]
    interfaces.append((Interface(device="eth0", ipv4=("10.0.0.2",)),))
    turn(agent, 0.1, Changes(links=True))
    turn(agent, 0.3)  # discover is debounced, then the channel registers
    assert server.registered[-1] == [Interface(device="eth0", ipv4=("10.0.0.2",))]


def test_a_notification_is_checked_again_once_things_settle(parts: Parts) -> None:
    _, kernel, _, _ = parts
    agent = make_agent(parts)
    agent.start()
    turn(agent, 0.0)
    agent.step(1.0, Changes(links=True))  # notified, but the device is still listed
    assert kernel.applies == ["r1"]
    kernel.shows = None  # ... and now it is gone
    agent.step(1.2)
    assert kernel.applies == ["r1"]
    agent.step(1.31)
    assert kernel.applies == ["r1", "r1"]


def _session(id: str, priority: int, target: str, source: str = "id-eth0") -> Session:
    return Session(
        id=id, name=id, filter_id="f", sources=(source,), target_id=target, priority=priority
    )


def test_a_state_beyond_the_limits_is_refused_whole_once_and_the_last_good_one_kept(
    parts: Parts, caplog: pytest.LogCaptureFixture
) -> None:
    server, kernel, state_file, _ = parts
    agent = make_agent(parts)
    turn(agent, 0.0)
    assert kernel.applies == ["r1"]
    sessions = tuple(_session(f"s{i:06d}", 1 + i % 32766, "t") for i in range(100_000))
    server.state = DesiredState(host="h", revision="huge", sessions=sessions)
    caplog.clear()
    for now in (0.3, 0.6, 0.9):
        turn(agent, now)
    assert kernel.applies == ["r1"] and state_file.load() == DesiredState(host="h", revision="r1")
    refusals = [r.getMessage() for r in caplog.records if "refusing" in r.getMessage()]
    assert refusals == [
        "refusing revision huge: beyond the documented limits (port id-eth0 is a source of "
        "100,000 sessions (at most 3); 4 sessions of source id-eth0 have priority 1 (unique "
        "per source); 4 sessions of source id-eth0 have priority 2 (unique per source); 4 "
        "sessions of source id-eth0 have priority 3 (unique per source); 4 sessions of source "
        "id-eth0 have priority 4 (unique per source); and 32,762 more); the kernel keeps "
        "revision r1"
    ]
    assert agent.metrics.refused_states._value.get() == 1
    # The channel took the refused state's tag on receipt: the server is asked with it
    # (and answers 304) until the state changes, not sent the same refused state again.
    assert server.asked_with[-1] == (f"{server.counter}-huge", HOLD_S)
    assert agent.pending is None
    server.state = DesiredState(host="h", revision="r2")
    turn(agent, 1.2)
    assert kernel.applies == ["r1", "r2"]


def test_sessions_with_an_unsafe_target_are_left_out_and_logged_once(
    parts: Parts, caplog: pytest.LogCaptureFixture
) -> None:
    server, kernel, _, _ = parts
    compiled: list[DesiredState] = []
    agent = make_agent(parts)
    agent.compile_plan = lambda state: compiled.append(state) or state.revision  # type: ignore[func-returns-value]
    agent.local_broadcasts = lambda: frozenset({"10.0.0.255"})
    targets = (
        Port(id="good", host="t", device="eth0", ipv4=("10.0.0.2",)),
        Port(id="bcast", host="t", device="eth0", ipv4=("255.255.255.255",)),
        Port(id="subnet", host="t", device="eth0", ipv4=("10.0.0.255",)),
    )
    sessions = (_session("a", 1, "bcast"), _session("b", 2, "subnet"), _session("c", 3, "good"))
    server.state = DesiredState(host="h", revision="r2", sessions=sessions, targets=targets)
    caplog.clear()
    turn(agent, 0.0)
    assert [s.id for s in compiled[-1].sessions] == ["c"]  # the others are still applied
    assert kernel.applies == ["r2"] and agent.applied == server.state
    kernel.shows = "tampered"  # a drift repair compiles again: no second log line
    turn(agent, 10.5)
    assert kernel.applies == ["r2", "r2"] and [s.id for s in compiled[-1].sessions] == ["c"]
    left_out = [r.getMessage() for r in caplog.records if "not applying" in r.getMessage()]
    assert left_out == [
        "not applying 2 sessions of revision r2, nothing is sent for them: session a: target "
        "bcast address 255.255.255.255 is broadcast; session b: target subnet address "
        "10.0.0.255 is broadcast"
    ]
    assert agent.metrics.refused_sessions._value.get() == 2
    server.state = DesiredState(host="h", revision="r3", sessions=sessions[2:], targets=targets)
    turn(agent, 10.8)
    assert agent.metrics.refused_sessions._value.get() == 0


def test_the_status_report_says_what_was_applied_failed_and_repaired(parts: Parts) -> None:
    server, kernel, _, _ = parts
    agent = make_agent(parts)
    agent.start()
    turn(agent, 0.0)
    assert server.statuses[-1] == ("r1", None, 0)
    count = len(server.statuses)
    turn(agent, 0.3)
    assert len(server.statuses) == count  # unchanged: not reported again before the minute
    kernel.broken = True
    server.state = DesiredState(host="h", revision="r2")
    turn(agent, 0.6)
    assert server.statuses[-1] == ("r1", "revision r2: nft: Could not process rule", 0)
    kernel.broken = False
    turn(agent, 0.6 + APPLY_RETRY_S)
    assert server.statuses[-1] == ("r2", None, 0)
    kernel.shows = None  # drift
    turn(agent, 3.0, Changes(nftables=True))
    assert server.statuses[-1] == ("r2", None, 1)
    count = len(server.statuses)
    agent.channel.send_once(3.0 + STATUS_INTERVAL_S - 1)
    assert len(server.statuses) == count
    turn(agent, 3.0 + STATUS_INTERVAL_S)
    assert len(server.statuses) == count + 1  # the heartbeat
    # Reachable again after a failure: told at once, though nothing changed.
    server.down = True
    agent.channel.follow_once()
    server.down = False
    agent.channel.follow_once()
    agent.channel.send_once(3.0 + STATUS_INTERVAL_S + 1)
    assert len(server.statuses) == count + 2 and server.statuses[-1] == ("r2", None, 1)


def test_a_refused_credential_keeps_the_kernel_and_shows_in_metrics(
    parts: Parts, caplog: pytest.LogCaptureFixture
) -> None:
    server, kernel, _, _ = parts
    agent = make_agent(parts)
    agent.start()
    turn(agent, 0.0)
    refused = agent.metrics.credential_refused
    assert refused._value.get() == 0
    server.revoked = True
    server.state = DesiredState(host="h", revision="r2")
    with caplog.at_level("INFO", logger="vxtap.agent"):
        turn(agent, 0.3)
        agent.channel.register((Interface(device="eth1"),))  # the sender is refused too
        turn(agent, 1.3)
        assert refused._value.get() == 1
        assert kernel.applies == ["r1"] and kernel.shows == "r1"  # the last state stays
        lines = [r.getMessage() for r in caplog.records if "refuses" in r.getMessage()]
        assert len(lines) == 1 and "the server refuses this host's credential" in lines[0]
        assert [r.levelname for r in caplog.records if "refuses" in r.getMessage()] == ["ERROR"]
        server.revoked = False
        turn(agent, 2.5)
    assert refused._value.get() == 0 and kernel.applies == ["r1", "r2"]
    accepted = [r for r in caplog.records if "accepts this host's credential" in r.getMessage()]
    assert [r.levelname for r in accepted] == ["INFO"]


def test_a_status_report_waiting_for_the_server_does_not_spin_the_sender(parts: Parts) -> None:
    server, _, _, _ = parts
    agent = make_agent(parts)
    agent.start()
    turn(agent, 0.0)
    server.down = True
    agent.channel.follow_once()  # unreachable now
    agent.channel.status(applied_revision="r1", apply_error="revision r2: broken", drift_repairs=0)
    count = len(server.statuses)
    # Not tried while the server is known to be away; the sender sleeps, it does not spin.
    assert agent.channel.send_once(0.3) == REPORT_INTERVAL_S
    assert len(server.statuses) == count
    server.down = False
    agent.channel.follow_once()
    assert agent.channel.send_once(0.4) is None
    assert server.statuses[-1] == ("r1", "revision r2: broken", 0)


def test_the_sender_thread_reports_a_changed_status_and_the_heartbeat(parts: Parts) -> None:
    server, _, _, _ = parts
    agent = make_agent(parts)
    channel = agent.channel
    channel.status_interval = 3600.0  # no heartbeat yet: only a change wakes the sender

    def until(condition: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 10  # generous: the machine is shared
        while not condition():
            assert time.monotonic() < deadline, server.statuses
            time.sleep(0.01)

    channel.status(applied_revision=None, apply_error=None, drift_repairs=0)
    channel.start()
    try:
        until(lambda: server.statuses == [(None, None, 0)])
        channel.status(applied_revision="r1", apply_error=None, drift_repairs=0)
        until(lambda: server.statuses[-1] == ("r1", None, 0))  # woke from its idle wait
        channel.status_interval = 0.05
        with channel.lock:
            channel.lock.notify_all()  # take the shorter heartbeat now
        until(lambda: len(server.statuses) >= 4)  # unchanged, reported again and again
        assert set(server.statuses[1:]) == {("r1", None, 0)}
    finally:
        channel.stop()
