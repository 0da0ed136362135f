"""The agent's decisions, pure: given what it knows and what it just saw, what to do.

The daemon (`vxtap.agent.daemon`) only performs I/O and feeds the results in
here, so every rule of the control loop is testable without a kernel or a server.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from vxtap.model import DesiredState, Interface

# After a failed apply, the same state is retried this much later.
APPLY_RETRY_S = 2.0
# A device's removal is notified before it is gone from every list: after a drift check
# that a kernel notification asked for, look once more this much later.
SETTLE_CHECK_S = 0.3
# One burst of link events (a device and its addresses) -> one discover, this much later.
REDISCOVER_DEBOUNCE_S = 0.1


@dataclass(frozen=True)
class Apply:
    """Make the kernel match `state`; `reason` is logged."""

    state: DesiredState
    reason: str


def on_start(saved: DesiredState | None, drift: Sequence[str] | None) -> Apply | None:
    """After (re)start, with the state saved by the previous run and the kernel's drift from it.

    Kernel state outlives the agent, so an unchanged kernel is left alone: no
    re-apply means no gap, no duplicate and no counter reset across a restart.
    """
    if saved is None:
        return None
    if drift:
        return Apply(
            saved, f"kernel differs from saved revision {saved.revision}: {'; '.join(drift)}"
        )
    return None


def on_fetch(applied: DesiredState | None, fetched: DesiredState) -> Apply | None:
    """A desired state arrived from the server: apply it when its revision is new."""
    if applied is not None and applied.revision == fetched.revision:
        return None
    before = applied.revision if applied is not None else "none"
    return Apply(fetched, f"revision {before} -> {fetched.revision}")


def on_drift(applied: DesiredState | None, drift: Sequence[str]) -> Apply | None:
    """The kernel was checked against the applied plan: repair what differs."""
    if applied is None or not drift:
        return None
    return Apply(applied, f"repairing drift: {'; '.join(drift)}")


def retry_blocked(failed: tuple[str, float] | None, revision: str, now: float) -> bool:
    """Whether applying `revision` must wait: its last apply, at `failed` = (revision,
    monotonic time), failed less than APPLY_RETRY_S ago."""
    return failed is not None and failed[0] == revision and now - failed[1] < APPLY_RETRY_S


def retry_wait(failed: tuple[str, float], now: float) -> float:
    """Seconds until the state whose apply failed may be applied again."""
    return max(0.0, failed[1] + APPLY_RETRY_S - now)


@dataclass(frozen=True)
class DesiredStateRequest:
    """How to ask for the desired state: the tag to send as If-None-Match and how long
    the server may hold the request (None: answer at once)."""

    if_none_match: str | None
    wait: float | None


def desired_state_request(tag: str | None, failures: int, hold: float) -> DesiredStateRequest:
    """The next desired-state request, given the tag of the last answer (or the saved
    revision after a restart) and the follower's consecutive failures.

    Held once there is something to compare with, and not right after a failure: a held
    request proves the server is back only when it returns.
    """
    held = tag is not None and failures == 0
    return DesiredStateRequest(if_none_match=tag, wait=hold if held else None)


def tag_after_answer(tag: str | None, answered: str | None) -> str | None:
    """The tag to send next: the answer's ETag, or the one sent when it carried none."""
    return answered or tag


def tag_after_restart(saved: DesiredState | None) -> str | None:
    """The tag to send first after a restart: the server's tag is not known, the saved
    state's content revision stands in for it."""
    return saved.revision if saved is not None else None


def interfaces_to_register(
    registered: Sequence[Interface] | None, current: Sequence[Interface]
) -> tuple[Interface, ...] | None:
    """The interfaces to (re-)register, or None when the server already has exactly these."""
    if registered is not None and tuple(registered) == tuple(current):
        return None
    return tuple(current)


def reachability_news(
    was_reachable: bool | None, was_failing_with: str | None, reachable: bool, detail: str
) -> str | None:
    """A log line when the server's reachability or the reason it fails changes, not on
    every failed request."""
    if reachable:
        if was_reachable is True:
            return None
        return "server reachable" + (" again" if was_reachable is False else "")
    if was_reachable is False and was_failing_with == detail:
        return None
    return f"server unreachable: {detail}; keeping the last known state in the kernel"


@dataclass
class Timer:
    """Fires every `interval` seconds of a monotonic clock; `due` says when next."""

    interval: float
    last: float | None = None

    def due(self, now: float) -> bool:
        return self.last is None or now - self.last >= self.interval

    def fired(self, now: float) -> None:
        self.last = now

    def remaining(self, now: float) -> float:
        return 0.0 if self.last is None else max(0.0, self.last + self.interval - now)

    def fire_in(self, now: float, seconds: float) -> None:
        """Be due `seconds` after `now` (sooner than the interval: a debounce, a re-check)."""
        self.last = now - self.interval + seconds
