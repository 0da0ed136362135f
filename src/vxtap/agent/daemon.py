"""The agent's control loop: I/O only; every decision is in `vxtap.agent.decide`.

One thread programs the kernel, in a select loop: it waits on netlink sockets for
link/address events (re-register interfaces, check the kernel at once), on the
channel's wake-up (a new desired state arrived), or until the next timer: check
drift, read counters. A single thread means the kernel is only ever programmed
from one place, in order. It never waits on the network: the channel
(`vxtap.agent.channel`) talks to the server on threads of its own.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import threading
import time
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from vxtap.agent import admit, decide
from vxtap.agent.channel import Channel, ControlPlane
from vxtap.agent.decide import Apply, Timer
from vxtap.agent.events import Changes, KernelEvents
from vxtap.agent.metrics import AgentMetrics
from vxtap.agent.statefile import StateFile
from vxtap.client import Fetched
from vxtap.model import DesiredState, Interface
from vxtap.wire.requests import CountersRequest

log = logging.getLogger("vxtap.agent")

PlanT = TypeVar("PlanT")
PlanT_contra = TypeVar("PlanT_contra", contravariant=True)

# Kernel notifications trigger a drift check at once (a deleted table or device is
# repaired within a fraction of a second, docs/agent.md); the timer is the safety net
# for changes that notify nothing (an eBPF map entry edited by hand), and costs CPU.
DRIFT_INTERVAL_S = 10.0
# How often kernel counters are read (and handed to the channel, which reports them
# when they changed, at most every `channel.REPORT_INTERVAL_S`).
COUNTERS_INTERVAL_S = 5.0
REDISCOVER_INTERVAL_S = 60.0
NO_CHANGES = Changes()


def release_memory() -> None:
    """Hand the heap that compiling a large plan grew back to the system.

    The previous plan and desired state became garbage with this apply; without
    this the agent keeps the high-water mark of every compile resident.
    """
    gc.collect()
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _glibc() -> ctypes.CDLL | None:
    try:  # glibc only; elsewhere freed memory simply stays with the process
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _glibc()


class Kernel(Protocol[PlanT_contra]):
    """What the agent needs from the data plane (`vxtap.dataplane.kernel.Dataplane`)."""

    def apply(self, plan: PlanT_contra) -> None: ...

    def drift(self, plan: PlanT_contra) -> list[str]: ...


CountersReader = Callable[[], CountersRequest]


class Agent(Generic[PlanT]):
    def __init__(
        self,
        *,
        host: str,
        server: ControlPlane,
        kernel: Kernel[PlanT],
        compile_plan: Callable[[DesiredState], PlanT],
        read_counters: CountersReader,
        discover: Callable[[], tuple[Interface, ...]],
        state_file: StateFile,
        metrics: AgentMetrics,
        local_broadcasts: Callable[[], frozenset[str]] = frozenset,
        drift_interval: float = DRIFT_INTERVAL_S,
        counters_interval: float = COUNTERS_INTERVAL_S,
        channel: Channel | None = None,
    ) -> None:
        self.host = host
        self.kernel = kernel
        self.compile_plan = compile_plan
        self.read_counters = read_counters
        self.discover = discover
        self.local_broadcasts = local_broadcasts
        self.state_file = state_file
        self.metrics = metrics
        self.channel = channel or Channel(host=host, server=server, metrics=metrics)
        self.drift_check = Timer(drift_interval)
        self.counters = Timer(counters_interval)
        self.rediscover = Timer(REDISCOVER_INTERVAL_S)
        self.applied: DesiredState | None = None
        self.applied_plan: PlanT | None = None
        # A state received but not applied yet (its apply failed: retried after a delay).
        self.pending: Fetched | None = None
        self.failed: tuple[str, float] | None = None  # (revision, monotonic time) of a failed apply
        self.refused_revision: str | None = None  # the last state refused as a whole
        self.refused_sessions: dict[str, str] = {}  # left out of the plan: id -> why
        self.interfaces: tuple[Interface, ...] = ()
        self.events: KernelEvents | None = None
        self.settle_check = False
        self.now = time.monotonic()  # the clock of the current step (tests pass their own)
        # What the server is told about this agent (handed to the channel: `_tell_status`).
        self.apply_error: str | None = None
        self.drift_repairs = 0

    # --- steps ---

    def start(self) -> None:
        """Pick up where the previous run left off, from the saved state and the kernel."""
        try:
            self._pick_up()
        finally:
            self._tell_status()  # the server hears of this agent even before an apply

    def _pick_up(self) -> None:
        saved = self.state_file.load()
        if saved is None:
            log.info("no saved state in %s; waiting for the server", self.state_file.path)
            return
        self.channel.tag = decide.tag_after_restart(saved)
        plan = self._compile(saved)
        try:
            drift = self.kernel.drift(plan)
        except Exception as error:  # cannot tell: make sure by applying
            drift = [f"checking the kernel failed: {error}"]
        action = decide.on_start(saved, drift)
        if action is None:
            log.info(
                "kernel already matches saved revision %s (%d sessions); left untouched",
                saved.revision,
                len(saved.sessions),
            )
            self._mark_applied(saved, plan)
        else:
            self._apply(action, "start")

    def step(self, now: float, changes: Changes = NO_CHANGES) -> None:
        """Whatever is due at monotonic time `now`, after the kernel reported `changes`."""
        self.now = now
        if changes.links:
            self.rediscover.fire_in(now, decide.REDISCOVER_DEBOUNCE_S)
        if changes.kernel:
            self.drift_check.last = None  # something of ours may be gone: check now
            self.settle_check = True
        if self.rediscover.due(now):
            self.rediscover.fired(now)
            self.interfaces = self.discover()
            self.channel.register(self.interfaces)
        self._follow(now)
        if self.drift_check.due(now):
            self.drift_check.fired(now)
            self._repair()
            if self.settle_check:
                self.settle_check = False
                self.drift_check.fire_in(now, decide.SETTLE_CHECK_S)
        if self.counters.due(now):
            self.counters.fired(now)
            self._read_counters()

    def next_due(self, now: float) -> float:
        """Seconds until `step` has something to do without a notification."""
        timers = (self.drift_check, self.counters, self.rediscover)
        due = min(t.remaining(now) for t in timers)
        if self.pending is not None and self.failed is not None:
            due = min(due, decide.retry_wait(self.failed, now))
        return due

    def run(self, stop: threading.Event) -> None:
        """Loop until `stop` is set; kernel notifications and new states wake the loop early."""
        self.events = KernelEvents()
        self.channel.wake = self.events.wake
        try:
            try:
                self.start()
            except Exception:  # e.g. a saved state this version cannot compile
                self.metrics.errors.labels("start").inc()
                log.exception("could not pick up the saved state; following the server")
            self.channel.start()
            while not stop.is_set():
                changes = self.events.wait(self.next_due(time.monotonic()))
                try:
                    self.step(time.monotonic(), changes)
                except Exception:  # a daemon outlives a transient failure; the kernel keeps going
                    self.metrics.errors.labels("loop").inc()
                    log.exception("unexpected error in the agent loop; continuing")
        finally:
            self.channel.stop()
            self.events.close()
        log.info("stopped; kernel state left in place (use 'vxtap agent --cleanup' to remove it)")

    # --- I/O helpers ---

    def _follow(self, now: float) -> None:
        """Apply the newest state the channel received (or retry one that failed)."""
        received = self.channel.take()
        if received is not None:
            self.pending = received
        if self.pending is None or self.pending.state is None:
            return
        fetched = self.pending.state
        action = decide.on_fetch(self.applied, fetched)
        if action is None:
            self.pending = None
            return
        problems = admit.limit_problems(fetched)
        if problems:
            # Not retried: the channel holds the refused state's tag, so the server
            # answers only when the state changes.
            self._refuse(fetched.revision, problems)
            self.pending = None
            return
        if decide.retry_blocked(self.failed, fetched.revision, now):
            return
        if self._apply(action, "revision"):
            self.pending = None

    def _refuse(self, revision: str, problems: list[str]) -> None:
        """A desired state beyond the documented limits: not applied; once per revision."""
        if revision == self.refused_revision:
            return
        self.refused_revision = revision
        self.metrics.refused_states.inc()
        log.error(
            "refusing revision %s: beyond the documented limits (%s); the kernel keeps %s",
            revision,
            admit.summary(problems),
            f"revision {self.applied.revision}" if self.applied else "what it had",
        )

    def _compile(self, state: DesiredState) -> PlanT:
        """The plan for `state` without the sessions whose target is not a unicast
        address (logged when that set changes, not on every compile)."""
        try:
            broadcasts = self.local_broadcasts()
        except Exception as error:  # the fixed checks still apply
            log.error("reading the host's broadcast addresses failed: %s", error)
            broadcasts = frozenset()
        refused = admit.unsafe_targets(state, broadcasts)
        if refused != self.refused_sessions:
            if refused:
                log.warning(
                    "not applying %d sessions of revision %s, nothing is sent for them: %s",
                    len(refused),
                    state.revision,
                    admit.summary([f"session {k}: {why}" for k, why in sorted(refused.items())]),
                )
            else:
                log.info("no session is left out for its target any more")
            self.refused_sessions = refused
            self.metrics.refused_sessions.set(len(refused))
        return self.compile_plan(admit.without_sessions(state, refused))

    def _repair(self) -> None:
        if self.applied_plan is None:
            return
        try:
            drift = self.kernel.drift(self.applied_plan)
        except Exception as error:  # a failing check must not stop the loop; say what failed
            self.metrics.errors.labels("drift").inc()
            log.error("checking the kernel for drift failed: %s", error)
            return
        action = decide.on_drift(self.applied, drift)
        if action is not None:
            self._apply(action, "drift")

    def _apply(self, action: Apply, reason: str) -> bool:
        """Compile and apply; False (logged, counted) when it failed."""
        started = time.perf_counter()
        try:
            plan = self._compile(action.state)
            self.kernel.apply(plan)
        except Exception as error:  # the loop must survive a bad apply; it retries later
            self.metrics.errors.labels("apply").inc()
            self.failed = (action.state.revision, self.now)
            log.error(
                "applying revision %s failed (%s): %s", action.state.revision, action.reason, error
            )
            self.apply_error = f"revision {action.state.revision}: {error}"
            self._tell_status()
            return False
        elapsed = time.perf_counter() - started
        if self.events is not None:
            # Our own changes notified too; `apply` verified the result already.
            self.events.drain()
        self.metrics.apply_seconds.observe(elapsed)
        self.metrics.applies.labels(reason).inc()
        self.failed = None
        if reason == "drift":
            self.drift_repairs += 1
        self.apply_error = None
        self._mark_applied(action.state, plan)
        self._tell_status()
        release_memory()
        try:
            self.state_file.save(action.state)
        except OSError as error:
            self.metrics.errors.labels("save").inc()
            log.error("saving the state to %s failed: %s", self.state_file.path, error)
        log.info(
            "applied revision %s: %d sessions, %d filters in %.1f ms (%s)",
            action.state.revision,
            len(action.state.sessions),
            len(action.state.filters),
            elapsed * 1000,
            action.reason,
        )
        return True

    def _mark_applied(self, state: DesiredState, plan: PlanT) -> None:
        self.applied, self.applied_plan = state, plan
        self.metrics.last_apply.set_to_current_time()
        self.metrics.sessions.set(len(state.sessions))
        self.metrics.applied.info({"revision": state.revision})
        self.metrics.kernel.state = state

    def _tell_status(self) -> None:
        self.channel.status(
            applied_revision=None if self.applied is None else self.applied.revision,
            apply_error=self.apply_error,
            drift_repairs=self.drift_repairs,
        )

    def _read_counters(self) -> None:
        if self.applied is None:
            return
        try:
            counters = self.read_counters()
        except Exception as error:  # reading counters must not stop mirroring
            self.metrics.errors.labels("counters").inc()
            log.error("reading kernel counters failed: %s", error)
            return
        kernel = self.metrics.kernel
        kernel.sessions, kernel.rules, kernel.members = (
            counters.sessions,
            counters.rules,
            counters.members,
        )
        self.channel.report(counters)
