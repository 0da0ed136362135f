"""The reference evaluator of docs/behaviour.md §2: which session mirrors a packet, and why.

Pure and deliberately naive: it walks sessions and rules exactly in the order
docs/behaviour.md §2 states, one comparison at a time, so that it can serve as the oracle
the kernel data plane is checked against (tests/dataplane/test_differential.py)
and as the explanation users get from `vxtap explain`.
"""

from __future__ import annotations

import ipaddress
from enum import StrEnum
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from vxtap.model import (
    IP_PROTOCOL_NUMBER,
    VXLAN_PORT,
    Action,
    DesiredState,
    Direction,
    EtherType,
    Filter,
    Port,
    Protocol,
    Rule,
    Session,
)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD
ETHERTYPE_ARP = 0x0806
ETHERTYPE_NUMBER: dict[EtherType, int] = {
    EtherType.IPV4: ETHERTYPE_IPV4,
    EtherType.IPV6: ETHERTYPE_IPV6,
}
PROTOCOL_NAME: dict[int, str] = {
    number: proto.value for proto, number in IP_PROTOCOL_NUMBER.items()
}
TCP, UDP = IP_PROTOCOL_NUMBER[Protocol.TCP], IP_PROTOCOL_NUMBER[Protocol.UDP]


class Packet(BaseModel):
    """The fields of one frame that docs/behaviour.md §2 looks at.

    `ethertype` is the Ethernet type number; only 0x0800 (IPv4) and 0x86DD
    (IPv6) frames carry the other fields. `protocol` is the IP protocol number
    of the transport header (for IPv6 after any extension headers), and the
    ports are present exactly when it is TCP (6) or UDP (17) and not a non-first
    fragment (IPv4 offset > 0, or an IPv6 fragment header with offset > 0): such a
    fragment carries no transport header, so it never matches a rule with ports.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    ethertype: Annotated[int, Field(ge=0, le=0xFFFF)]
    protocol: Annotated[int, Field(ge=0, le=255)] | None = None
    src: IPAddress | None = None
    dst: IPAddress | None = None
    sport: Annotated[int, Field(ge=0, le=65535)] | None = None
    dport: Annotated[int, Field(ge=0, le=65535)] | None = None
    non_first_fragment: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        version = {ETHERTYPE_IPV4: 4, ETHERTYPE_IPV6: 6}.get(self.ethertype)
        if version is None:
            extra = [
                name
                for name in ("protocol", "src", "dst", "sport", "dport")
                if getattr(self, name) is not None
            ] + (["fragment offset"] if self.non_first_fragment else [])
            if extra:
                raise ValueError(
                    f"a non-IP frame (ethertype 0x{self.ethertype:04x}) has no {', '.join(extra)}"
                )
            return self
        if self.protocol is None or self.src is None or self.dst is None:
            raise ValueError("an IP packet needs protocol, src and dst")
        for name, address in (("src", self.src), ("dst", self.dst)):
            if address.version != version:
                raise ValueError(
                    f"{name} {address} is not an IPv{version} address "
                    f"(ethertype 0x{self.ethertype:04x})"
                )
        has_ports = self.protocol in (TCP, UDP) and not self.non_first_fragment
        if self.non_first_fragment and (self.sport is not None or self.dport is not None):
            raise ValueError("a non-first fragment carries no ports")
        if has_ports and (self.sport is None or self.dport is None):
            raise ValueError(f"a {PROTOCOL_NAME[self.protocol]} packet needs sport and dport")
        if not has_ports and (self.sport is not None or self.dport is not None):
            raise ValueError(f"only TCP and UDP packets have ports, not protocol {self.protocol}")
        return self

    @classmethod
    def ip(
        cls,
        protocol: int | Protocol,
        src: str | IPAddress,
        dst: str | IPAddress,
        sport: int | None = None,
        dport: int | None = None,
        *,
        non_first_fragment: bool = False,
    ) -> Packet:
        """An IPv4 or IPv6 packet; the version follows from the addresses."""
        source = ipaddress.ip_address(src)
        number = IP_PROTOCOL_NUMBER[protocol] if isinstance(protocol, Protocol) else protocol
        ethertype = ETHERTYPE_IPV4 if source.version == 4 else ETHERTYPE_IPV6
        return cls(
            ethertype=ethertype,
            protocol=number,
            src=source,
            dst=ipaddress.ip_address(dst),
            sport=sport,
            dport=dport,
            non_first_fragment=non_first_fragment,
        )

    @classmethod
    def non_ip(cls, ethertype: int = ETHERTYPE_ARP) -> Packet:
        return cls(ethertype=ethertype)

    @property
    def is_ip(self) -> bool:
        return self.ethertype in (ETHERTYPE_IPV4, ETHERTYPE_IPV6)

    def __str__(self) -> str:
        if not self.is_ip:
            return f"non-IP frame, ethertype 0x{self.ethertype:04x}"
        name = PROTOCOL_NAME.get(self.protocol or 0, f"protocol {self.protocol}")
        if self.sport is not None:
            return f"{name} {_with_port(self.src, self.sport)} > {_with_port(self.dst, self.dport)}"
        fragment = " (non-first fragment)" if self.non_first_fragment else ""
        return f"{name} {self.src} > {self.dst}{fragment}"


def _with_port(address: IPAddress | None, port: int | None) -> str:
    return f"[{address}]:{port}" if address and address.version == 6 else f"{address}:{port}"


def rule_mismatch(rule: Rule, packet: Packet) -> str | None:
    """None when `rule` matches `packet` (docs/behaviour.md §2.3), else the field that differs."""
    if packet.ethertype != ETHERTYPE_NUMBER[rule.ethertype]:
        return f"ethertype is not {rule.ethertype}"
    if rule.protocol is not Protocol.ALL and packet.protocol != IP_PROTOCOL_NUMBER[rule.protocol]:
        return f"protocol is not {rule.protocol}"
    if rule.source_cidr is not None and packet.src not in rule.source_cidr:
        return f"source {packet.src} is not in {rule.source_cidr}"
    if rule.destination_cidr is not None and packet.dst not in rule.destination_cidr:
        return f"destination {packet.dst} is not in {rule.destination_cidr}"
    has_ranges = rule.source_ports is not None or rule.destination_ports is not None
    if has_ranges and packet.non_first_fragment:
        return "a non-first fragment carries no ports"
    if rule.source_ports is not None and packet.sport not in rule.source_ports:
        return f"source port {packet.sport} is not in {rule.source_ports}"
    if rule.destination_ports is not None and packet.dport not in rule.destination_ports:
        return f"destination port {packet.dport} is not in {rule.destination_ports}"
    return None


class Outcome(StrEnum):
    """What happened to the packet in one session."""

    MIRRORED = "mirrored"  # an accept rule matched first
    REJECTED = "rejected"  # a reject rule matched first
    NO_MATCH = "no-match"  # no rule of this direction matched
    NO_RULES = "no-rules"  # the filter has no rules in this direction
    DISABLED = "disabled"  # the session is disabled
    NOT_REACHED = "not-reached"  # an earlier session already mirrored the packet


class SessionTrial(BaseModel):
    model_config = ConfigDict(frozen=True)

    session_id: str
    session_name: str
    session_priority: int
    outcome: Outcome
    rule_id: str | None = None
    rule_priority: int | None = None
    reason: str


class Verdict(BaseModel):
    """Whether and through which session a packet is mirrored, with every session's story."""

    model_config = ConfigDict(frozen=True)

    port_id: str
    direction: Direction
    packet: Packet
    session_id: str | None = None
    rule_id: str | None = None
    vni: int | None = None
    target_id: str | None = None
    reason: str
    trials: tuple[SessionTrial, ...] = ()

    @property
    def mirrored(self) -> bool:
        return self.session_id is not None


def mirror_destinations(state: DesiredState) -> frozenset[IPAddress]:
    """The addresses this host sends mirrors to: targets of sessions that can mirror."""
    filters = {f.id: f for f in state.filters}
    targets = {p.id: p for p in (*state.ports, *state.targets)}
    addresses = set()
    for session in state.sessions:
        filter_ = filters.get(session.filter_id)
        target = targets.get(session.target_id)
        if session.enabled and filter_ and filter_.rules and target and target.address:
            addresses.add(ipaddress.ip_address(target.address))
    return frozenset(addresses)


def is_mirror_output(state: DesiredState, direction: Direction, packet: Packet) -> bool:
    """docs/behaviour.md §2.4: the mirror's own VXLAN output is never mirrored again.

    Mirror output is what this host sends: UDP to port 4789 of a mirror target.
    The kernel cannot tell it from another VXLAN packet to that same target and
    port, so neither is mirrored; VXLAN to any other address is ordinary traffic.
    """
    return (
        direction is Direction.EGRESS
        and packet.protocol == UDP
        and packet.dport == VXLAN_PORT
        and packet.dst in mirror_destinations(state)
    )


def _try_session(
    session: Session, filter_: Filter | None, direction: Direction, packet: Packet
) -> SessionTrial:
    def trial(outcome: Outcome, reason: str, rule: Rule | None = None) -> SessionTrial:
        return SessionTrial(
            session_id=session.id,
            session_name=session.name,
            session_priority=session.priority,
            outcome=outcome,
            rule_id=rule.id if rule else None,
            rule_priority=rule.priority if rule else None,
            reason=reason,
        )

    if not session.enabled:
        return trial(Outcome.DISABLED, "session is disabled")
    rules = filter_.rules_for(direction) if filter_ is not None else ()
    if not rules:
        return trial(Outcome.NO_RULES, f"filter has no {direction} rules")
    if not packet.is_ip:
        return trial(Outcome.NO_MATCH, f"{packet} never matches a rule")
    for rule in rules:
        if rule_mismatch(rule, packet) is None:
            if rule.action is Action.ACCEPT:
                return trial(Outcome.MIRRORED, f"rule {rule.priority} accepts", rule)
            return trial(Outcome.REJECTED, f"rule {rule.priority} rejects", rule)
    return trial(Outcome.NO_MATCH, f"none of {len(rules)} {direction} rules matches")


def explain(state: DesiredState, port_id: str, direction: Direction, packet: Packet) -> Verdict:
    """docs/behaviour.md §2 for `packet` seen on port `port_id` in `direction`."""
    sessions = sorted(
        (s for s in state.sessions if port_id in s.sources), key=lambda s: (s.priority, s.id)
    )
    filters = {f.id: f for f in state.filters}

    def verdict(reason: str, trials: list[SessionTrial], session: Session | None = None) -> Verdict:
        rule_id = next((t.rule_id for t in trials if t.outcome is Outcome.MIRRORED), None)
        return Verdict(
            port_id=port_id,
            direction=direction,
            packet=packet,
            session_id=session.id if session else None,
            rule_id=rule_id,
            vni=session.vni if session else None,
            target_id=session.target_id if session else None,
            reason=reason,
            trials=tuple(trials),
        )

    if not sessions:
        return verdict(f"port {port_id} is not a source of any session", [])
    if is_mirror_output(state, direction, packet):
        return verdict(f"UDP to port {VXLAN_PORT} is mirror output, never mirrored again", [])
    trials: list[SessionTrial] = []
    for index, session in enumerate(sessions):
        trial = _try_session(session, filters.get(session.filter_id), direction, packet)
        trials.append(trial)
        if trial.outcome is Outcome.MIRRORED:
            for later in sessions[index + 1 :]:
                trials.append(
                    SessionTrial(
                        session_id=later.id,
                        session_name=later.name,
                        session_priority=later.priority,
                        outcome=Outcome.NOT_REACHED,
                        reason=f"already mirrored by session {session.name}",
                    )
                )
            return verdict(f"mirrored by session {session.name} ({trial.reason})", trials, session)
    return verdict(f"no session mirrors it ({len(sessions)} tried)", trials)


def port_by_name(state: DesiredState, name: str) -> Port | None:
    """A port of `state` by id or by `HOST/DEVICE`."""
    for port in state.ports:
        if name in (port.id, f"{port.host}/{port.device}"):
            return port
    return None
