"""The agent's side of the channel to `vxtap server`, on threads of its own.

The kernel loop (`vxtap.agent.daemon`) never waits on the network: a server that
trickles, hangs or talks garbage delays at most what the server says, never drift
repair. Two threads talk to the server:

- the follower holds a desired-state request open (`?wait=`, If-None-Match with the
  tag of the last answer): the server answers when this host's state changes, else
  304 after the wait. A new state is handed to the loop and the loop woken.
- the sender registers the host's interfaces, reports counters when the loop hands it
  new ones (counters only when they changed, at most every few seconds), and reports
  the agent's status (what it applied): when it changed, when the server is reachable
  again after a failure, and every `STATUS_INTERVAL_S` besides.

Failures back off exponentially with jitter (a fleet that lost its server does not
come back in one wave) and are logged once when they start or change; a refused
credential (401/403) is logged once as an error until the server accepts it again.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from vxtap import __version__
from vxtap.agent import decide
from vxtap.agent.metrics import AgentMetrics
from vxtap.client import ApiError, Fetched, InvalidAnswer, ServerUnreachable, VxtapClientError
from vxtap.model import Counter, Interface, Port
from vxtap.wire.requests import CountersRequest

log = logging.getLogger("vxtap.agent")

# How long the server may hold a desired-state request before answering 304 (plus up
# to a tenth of it, jitter). Each renewal costs the server about a millisecond of CPU
# (signature, two primary-key reads), so at 10,000 agents 30 s would keep a third of a
# core busy doing nothing; 300 s (Consul's default wait) keeps it to a few percent.
# Changes do not wait for it: they answer the held request at once.
HOLD_S = 300.0
# Never start requests closer together than this: an older server that ignores `wait`
# answers at once, and the agent then polls as it used to, not in a tight loop.
MIN_REQUEST_INTERVAL_S = 0.2
# Failed requests are retried after BACKOFF_FIRST_S, doubling up to BACKOFF_MAX_S, each
# delay drawn between half and all of that (jitter).
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 5.0
# Counters are reported when they changed, and at most this often.
REPORT_INTERVAL_S = 5.0
# The largest desired state read: a host at the data plane's limits is well under 1 MiB
# of JSON; parsing 16 MiB costs the agent a few hundred MB at most (docs/agent.md).
MAX_DESIRED_STATE_BYTES = 16 << 20
# The agent's status goes to the server when it changes, and this often besides, so that
# `vxtap host list` shows when each host was last heard of.
STATUS_INTERVAL_S = 60.0
# HTTP statuses with which the server refuses this host's credential (revoked, wrong key).
REFUSED = frozenset({401, 403})


class ControlPlane(Protocol):
    """What the agent needs from `vxtap server` (`vxtap.client.VxtapClient` provides it)."""

    def register_ports(self, host: str, interfaces: list[Interface]) -> list[Port]: ...

    def fetch_desired_state(
        self,
        host: str,
        *,
        if_none_match: str | None = None,
        wait: float | None = None,
        deadline: float | None = None,
    ) -> Fetched: ...

    def report_counters(
        self,
        host: str,
        sessions: Mapping[str, Counter],
        rules: Mapping[str, Counter],
        members: Mapping[str, Counter] | None = None,
    ) -> None: ...

    def report_status(
        self,
        host: str,
        *,
        agent_version: str,
        applied_revision: str | None,
        apply_error: str | None,
        drift_repairs: int,
    ) -> None: ...


@dataclass(frozen=True)
class AgentStatus:
    """What the agent tells the server it applied (`vxtap host list`)."""

    applied_revision: str | None
    apply_error: str | None
    drift_repairs: int


def failure_kind(error: VxtapClientError) -> str:
    """The metric label of a failed request."""
    if isinstance(error, ApiError):
        return "refused"
    if isinstance(error, InvalidAnswer):
        return "invalid"
    if isinstance(error, ServerUnreachable):
        return "unreachable"
    return "other"


def describe(error: VxtapClientError) -> str:
    if isinstance(error, ApiError):
        return f"it refused the request ({error})"
    return str(error)


@dataclass
class Backoff:
    """Exponential back-off with jitter; `failures` is the count since the last success."""

    first: float = BACKOFF_FIRST_S
    most: float = BACKOFF_MAX_S
    failures: int = 0

    def next_delay(self, rand: Callable[[], float] = random.random) -> float:
        self.failures += 1
        ceiling = min(self.most, self.first * 2.0 ** (self.failures - 1))
        return ceiling * (0.5 + 0.5 * rand())

    def reset(self) -> None:
        self.failures = 0


class Reachability:
    """Whether the server last gave a valid answer, and whether it refuses this host's
    credential; logs once per change, not per request (shared by both threads)."""

    def __init__(self, metrics: AgentMetrics) -> None:
        self.metrics = metrics
        self.reachable: bool | None = None
        self.failure: str | None = None  # the current failure's description
        self.credential_refused = False
        self.recoveries = 0  # times the server became reachable again after failing
        self.lock = threading.Lock()

    def ok(self) -> None:
        self._set(True, None, refused=False)

    def failed(self, error: VxtapClientError) -> None:
        refused = isinstance(error, ApiError) and error.status in REFUSED
        self._set(False, describe(error), refused=refused, error=error)

    def _set(
        self,
        reachable: bool,
        failure: str | None,
        *,
        refused: bool,
        error: VxtapClientError | None = None,
    ) -> None:
        with self.lock:
            if refused and not self.credential_refused:
                log.error(
                    "the server refuses this host's credential (%s): revoked, or not this "
                    "host's key; keeping the last applied state in the kernel",
                    error,
                )
            elif reachable and self.credential_refused:
                log.info("the server accepts this host's credential again")
            if refused or reachable:  # another failure says nothing about the credential
                self.credential_refused = refused
                self.metrics.credential_refused.set(1 if refused else 0)
            news = decide.reachability_news(self.reachable, self.failure, reachable, failure or "")
            if news:
                (log.info if reachable else log.warning)(news)
            if reachable and self.reachable is False:
                self.recoveries += 1
            self.reachable, self.failure = reachable, failure
            self.metrics.server_reachable.set(1 if reachable else 0)


class Channel:
    def __init__(
        self,
        *,
        host: str,
        server: ControlPlane,
        metrics: AgentMetrics,
        wake: Callable[[], None] = lambda: None,
        hold: float = HOLD_S,
        report_interval: float = REPORT_INTERVAL_S,
        status_interval: float = STATUS_INTERVAL_S,
    ) -> None:
        self.host = host
        self.server = server
        self.metrics = metrics
        self.wake = wake
        self.hold = hold
        self.report_interval = report_interval
        self.status_interval = status_interval
        self.reachability = Reachability(metrics)
        self.stopping = threading.Event()
        self.lock = threading.Condition()
        # Follower: the tag of the last answer (or the saved revision after a restart).
        self.tag: str | None = None
        self.received: Fetched | None = None  # a new state the loop has not taken yet
        self.follow_backoff = Backoff()
        # Sender: what the loop wants registered / reported, and what the server has.
        self.interfaces: tuple[Interface, ...] | None = None
        self.registered: tuple[Interface, ...] | None = None
        self.counters: CountersRequest | None = None
        self.reported: CountersRequest | None = None
        self.last_report = -float("inf")
        self.agent_status: AgentStatus | None = None  # the loop's latest
        self.reported_status: AgentStatus | None = None
        self.last_status = -float("inf")
        self.status_recoveries = 0  # `reachability.recoveries` at the last status report
        self.send_backoff = Backoff()
        self.threads: list[threading.Thread] = []

    # --- the loop's side (any thread) ---

    def take(self) -> Fetched | None:
        """The newest desired state received since the last call, if any."""
        with self.lock:
            received, self.received = self.received, None
            return received

    def register(self, interfaces: tuple[Interface, ...]) -> None:
        with self.lock:
            self.interfaces = interfaces
            self.lock.notify_all()

    def report(self, counters: CountersRequest) -> None:
        with self.lock:
            self.counters = counters
            self.lock.notify_all()

    def status(
        self, *, applied_revision: str | None, apply_error: str | None, drift_repairs: int
    ) -> None:
        """The agent's latest status; the sender reports it when it changed."""
        status = AgentStatus(applied_revision, apply_error, drift_repairs)
        with self.lock:
            if status != self.agent_status:
                self.agent_status = status
                self.lock.notify_all()

    @property
    def reachable(self) -> bool | None:
        return self.reachability.reachable

    def start(self) -> None:
        for name, body in (("follow", self._follow_forever), ("send", self._send_forever)):
            thread = threading.Thread(target=body, name=f"vxtap-agent-{name}", daemon=True)
            thread.start()
            self.threads.append(thread)

    def stop(self) -> None:
        """Stop asking; a request in flight is abandoned (the threads are daemons)."""
        self.stopping.set()
        with self.lock:
            self.lock.notify_all()

    # --- follower ---

    def follow_once(self) -> float:
        """One desired-state request; the seconds to wait before the next one."""
        started = time.monotonic()
        request = decide.desired_state_request(self.tag, self.follow_backoff.failures, self.hold)
        try:
            answer = self.server.fetch_desired_state(
                self.host, if_none_match=request.if_none_match, wait=request.wait
            )
        except VxtapClientError as error:
            self.metrics.errors.labels("fetch").inc()
            self.metrics.failed_fetches.labels(failure_kind(error)).inc()
            self.reachability.failed(error)
            return self.follow_backoff.next_delay()
        self.follow_backoff.reset()
        self.reachability.ok()
        self.metrics.last_sync.set_to_current_time()
        with self.lock:
            self.tag = decide.tag_after_answer(self.tag, answer.etag)
            if answer.state is not None:
                self.received = answer
        if answer.state is not None:
            self.wake()
        return max(0.0, MIN_REQUEST_INTERVAL_S - (time.monotonic() - started))

    # --- sender ---

    def send_once(self, now: float) -> float | None:
        """Register or report what is due; the seconds until it is worth trying again,
        None when nothing is pending."""
        with self.lock:
            interfaces = (
                None
                if self.interfaces is None
                else decide.interfaces_to_register(self.registered, self.interfaces)
            )
            counters = self.counters if self.counters != self.reported else None
        if interfaces is not None:
            try:
                ports = self.server.register_ports(self.host, list(interfaces))
            except VxtapClientError as error:
                self.metrics.errors.labels("register").inc()
                self.reachability.failed(error)
                return self.send_backoff.next_delay()
            self.registered = interfaces
            self.send_backoff.reset()
            self.reachability.ok()
            log.info(
                "registered %d interfaces of host %s: %s",
                len(ports),
                self.host,
                ", ".join(f"{p.device}={p.id}" for p in ports) or "none",
            )
        delays = [self._send_status(now), self._send_counters(counters, now)]
        return min((d for d in delays if d is not None), default=None)

    def _status_due_in(self, now: float) -> float | None:
        """Seconds until the status is to be reported (0: now); None: no status yet."""
        if self.agent_status is None:
            return None
        if (
            self.agent_status != self.reported_status
            or self.reachability.recoveries != self.status_recoveries
        ):
            return 0.0
        return max(0.0, self.last_status + self.status_interval - now)

    def _send_status(self, now: float) -> float | None:
        with self.lock:
            status, due_in = self.agent_status, self._status_due_in(now)
        if status is None or due_in is None or due_in > 0:
            return None
        if self.reachability.reachable is False:
            return self.report_interval  # the follower finds out when it is back
        recoveries = self.reachability.recoveries
        self.last_status = now
        try:
            self.server.report_status(
                self.host,
                agent_version=__version__,
                applied_revision=status.applied_revision,
                apply_error=status.apply_error,
                drift_repairs=status.drift_repairs,
            )
        except VxtapClientError as error:
            self.metrics.errors.labels("status").inc()
            self.reachability.failed(error)
            return max(self.report_interval, self.send_backoff.next_delay())
        self.reported_status = status
        self.status_recoveries = recoveries
        self.send_backoff.reset()
        self.reachability.ok()
        return None

    def _send_counters(self, counters: CountersRequest | None, now: float) -> float | None:
        if counters is None:
            return None
        wait = self.last_report + self.report_interval - now
        if wait > 0:
            return wait
        if self.reachability.reachable is False:
            # Not while the server is known to be away; the follower finds out when it is back.
            return self.report_interval
        self.last_report = now
        try:
            self.server.report_counters(
                self.host, counters.sessions, counters.rules, counters.members
            )
        except VxtapClientError as error:
            self.metrics.errors.labels("report").inc()
            self.reachability.failed(error)
            return max(self.report_interval, self.send_backoff.next_delay())
        self.reported = counters
        self.send_backoff.reset()
        self.reachability.ok()
        return None

    def _send_forever(self) -> None:
        while not self.stopping.is_set():
            delay = self._guarded(lambda: self.send_once(time.monotonic()))
            if delay is not None:
                self.stopping.wait(delay)
                continue
            with self.lock:  # nothing pending: sleep until the loop hands something new
                while not self.stopping.is_set() and (self.interfaces, self.counters) == (
                    self.registered,
                    self.reported,
                ):
                    heartbeat = self._status_due_in(time.monotonic())
                    if heartbeat is not None and heartbeat <= 0:
                        break  # a status to report (changed, or the heartbeat)
                    self.lock.wait(heartbeat)

    def _follow_forever(self) -> None:
        while not self.stopping.is_set():
            self.stopping.wait(self._guarded(self.follow_once) or 0.0)

    def _guarded(self, step: Callable[[], float | None]) -> float | None:
        try:
            return step()
        except Exception:  # a bug must not end the channel; the kernel keeps its state
            self.metrics.errors.labels("channel").inc()
            log.exception("unexpected error talking to the server; continuing")
            return BACKOFF_MAX_S
