"""The agent's decisions, pure: given what it knows and what it just saw, what to do.

The daemon (`vxtap.agent.daemon`) only performs I/O and feeds the results in
here, so every rule of the control loop is testable without a kernel or a server.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from vxtap.model import DesiredState, Interface


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
