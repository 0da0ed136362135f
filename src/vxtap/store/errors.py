"""Why the store refused a change, as domain types: no HTTP status, no Huawei code.

The API answers each with a status and a Huawei-style code, from one table
(`vxtap.api.errors`). The kinds of `Conflict` are types, so a caller picks the one
it handles by `except`, and a new kind cannot be answered by accident as another.
"""

from __future__ import annotations


class StoreError(Exception):
    """A refusal worded for the client: `message` says what to change."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(StoreError):
    """The project has no such filter, rule, session, port or host."""


class Invalid(StoreError):
    """The input is well formed but cannot be stored as it is (e.g. a rule's port range
    on a protocol without ports, a value the database cannot hold)."""


class Busy(StoreError):
    """Another writer held the database's lock past the time this write may wait."""


class Conflict(StoreError):
    """The change contradicts what is stored; each kind below says how."""


class InUse(Conflict):
    """Deleting a filter or port that a session still names."""


class DuplicatePriority(Conflict):
    """A rule priority is unique per filter and direction; a session priority per source."""


class QuotaExceeded(Conflict):
    """Sources per session, sessions per source, rules per filter and direction."""


class AlreadyExists(Conflict):
    """A port with this host and device, or a host enrolled already."""


class ConcurrentChange(Conflict):
    """Concurrent changes took the same slot or key on every retry."""
