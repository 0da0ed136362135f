"""What the agent refuses before compiling, pure.

Two checks on what the server sent, because a buggy or compromised server, or a
row stored before the server checked it, must not make a host flood its
underlay or program the kernel beyond what vxtap is built for:

- `limit_problems`: a desired state beyond the documented limits (docs/agent.md)
  is refused as a whole; the kernel keeps the last good state.
- `unsafe_targets`: a session whose target address, or the address of any member of
  its target group, is not a unicast address (broadcast, multicast, unspecified,
  loopback, link-local) is left out; the other sessions are still applied.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from typing import TypeVar

from vxtap.model import (
    MAX_SESSIONS_PER_SOURCE,
    MAX_SOURCES_PER_SESSION,
    DesiredState,
    TargetKind,
    non_unicast_kind,
)

# Problems named in the one log line (a state can have 100,000 of the same kind).
SHOWN_PROBLEMS = 5
T = TypeVar("T")


def limit_problems(state: DesiredState) -> list[str]:
    """Why `state` is beyond the documented limits (empty: within them).

    Per-field ranges (VNI, priorities, packet length, ports) are checked when the
    state is parsed; these are the limits that span several objects."""
    problems: list[str] = []
    for kind, ids in (
        ("port", (p.id for p in state.ports)),
        ("target", (p.id for p in state.targets)),
        ("session", (s.id for s in state.sessions)),
        ("filter", (f.id for f in state.filters)),
        ("rule", (r.id for f in state.filters for r in f.rules)),
        ("target group", (g.id for g in state.groups)),
    ):
        problems += [f"{kind} id {i} appears {n:,} times" for i, n in _repeated(ids).items()]
    # A member's number names its kernel entry and fills the placement table: two members
    # with one number would share an entry (docs/elb.md).
    for group in state.groups:
        for what, values in (
            ("member number", (m.number for m in group.members)),
            ("port", (m.port_id for m in group.members)),
        ):
            problems += [
                f"target group {group.id}: {what} {v} appears {n:,} times"
                for v, n in _repeated(values).items()
            ]
    for session in state.sessions:
        if len(session.sources) > MAX_SOURCES_PER_SESSION:
            problems.append(
                f"session {session.id} has {len(session.sources):,} sources "
                f"(at most {MAX_SOURCES_PER_SESSION})"
            )
    per_source = Counter(p for s in state.sessions for p in set(s.sources))
    problems += [
        f"port {port} is a source of {n:,} sessions (at most {MAX_SESSIONS_PER_SOURCE})"
        for port, n in per_source.items()
        if n > MAX_SESSIONS_PER_SOURCE
    ]
    priorities = _repeated((p, s.priority) for s in state.sessions for p in set(s.sources))
    problems += [
        f"{n:,} sessions of source {port} have priority {priority} (unique per source)"
        for (port, priority), n in priorities.items()
    ]
    for flt in state.filters:
        problems += [
            f"rule of filter {flt.id} with a filter id {r.filter_id}"
            for r in flt.rules
            if r.filter_id != flt.id
        ]
        rules = _repeated((r.direction.value, r.priority) for r in flt.rules)
        problems += [
            f"{n:,} {direction} rules of filter {flt.id} have priority {priority} "
            "(unique per filter and direction)"
            for (direction, priority), n in rules.items()
        ]
    return problems


def summary(problems: list[str]) -> str:
    """The problems in one bounded line."""
    text = "; ".join(problems[:SHOWN_PROBLEMS])
    if len(problems) > SHOWN_PROBLEMS:
        text += f"; and {len(problems) - SHOWN_PROBLEMS:,} more"
    return text


def unsafe_address(address: str, local_broadcasts: Collection[str] = ()) -> str | None:
    """Why `address` cannot be a mirror target (None: a unicast address).

    `local_broadcasts` are the broadcast addresses of this host's own subnets (the
    kernel's local routing table knows them); other subnets' broadcast addresses
    cannot be told from a unicast address here."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return "not an IP address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # sent as IPv4 by the kernel: judged as IPv4
    if str(ip) in local_broadcasts:
        return "broadcast"
    return non_unicast_kind(ip)


def unsafe_targets(state: DesiredState, local_broadcasts: Iterable[str] = ()) -> dict[str, str]:
    """Session id -> why its target is refused, for the sessions of `state` whose
    target address, or a member's address of its target group (healthy or not: it may
    be healthy at any moment), is not a unicast address. A session whose target is
    unknown or has no address is not listed: the compiler skips it anyway."""
    broadcasts = frozenset(local_broadcasts)
    targets = {p.id: p for p in (*state.ports, *state.targets)}
    groups = {g.id: g for g in state.groups}
    refused: dict[str, str] = {}
    for session in state.sessions:
        # (what the message calls it, port id): the target, or every member of the group.
        if session.target_kind is TargetKind.ELB:
            group = groups.get(session.target_id)
            receivers = [
                (f"member {m.port_id} of target group {session.target_id}:", m.port_id)
                for m in sorted(group.members if group else (), key=lambda m: m.number)
            ]
        else:
            receivers = [(f"target {session.target_id}", session.target_id)]
        for name, port_id in receivers:
            port = targets.get(port_id)
            address = port.address if port is not None else None
            reason = None if address is None else unsafe_address(address, broadcasts)
            if reason is not None:
                refused[session.id] = f"{name} address {address} is {reason}"
                break
    return refused


def without_sessions(state: DesiredState, session_ids: Mapping[str, object]) -> DesiredState:
    """`state` without those sessions (the same object when there are none)."""
    if not session_ids:
        return state
    kept = tuple(s for s in state.sessions if s.id not in session_ids)
    return state.model_copy(update={"sessions": kept})


def _repeated(items: Iterable[T]) -> dict[T, int]:
    return {item: n for item, n in Counter(items).items() if n > 1}
