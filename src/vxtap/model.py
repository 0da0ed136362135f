"""The domain of traffic mirroring, as plain immutable values.

Everything here is pure: no I/O, no clock, no database. The API layer converts
its wire models (with Huawei's quirks: strings for numbers, envelopes, any
letter case) into these types; the dataplane compiler, the evaluator and the
agent consume them. The agent's view of the world, `DesiredState`, travels from
server to agent as JSON through pydantic, so both sides share one definition.
"""

from __future__ import annotations

import ipaddress
from enum import StrEnum
from typing import Annotated, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

VXLAN_PORT = 4789
MAX_SOURCES_PER_SESSION = 10
MAX_SESSIONS_PER_SOURCE = 3
DEFAULT_VNI = 1
# The server's default quota of rules per filter and direction (`vxtap server
# --max-rules-per-direction`): every packet of a source is compared with the rules ahead
# of the one that decides, so this bounds what a filter costs production traffic
# (docs/control-plane.md, docs/benchmarks.md).
DEFAULT_MAX_RULES_PER_DIRECTION = 50
DEFAULT_PACKET_LENGTH = 96
# A target group's members are numbered 0-255: a member's number is one byte of the
# kernel's placement table (vxtap.dataplane.placement, docs/elb.md).
MAX_GROUP_MEMBERS = 256
# A list answers at most this many items a page (docs/behaviour.md §1.8).
MAX_PAGE_SIZE = 2000
# Counters are stored as 64-bit signed integers (SQLite INTEGER, PostgreSQL BIGINT).
COUNTER_MAX = 2**63 - 1
CounterValue = Annotated[int, Field(ge=0, le=COUNTER_MAX, strict=True)]


class Direction(StrEnum):
    INGRESS = "ingress"  # received by the source interface
    EGRESS = "egress"  # sent by the source interface


class Action(StrEnum):
    ACCEPT = "accept"
    REJECT = "reject"


class EtherType(StrEnum):
    IPV4 = "IPv4"
    IPV6 = "IPv6"


class Protocol(StrEnum):
    TCP = "TCP"
    UDP = "UDP"
    ICMP = "ICMP"
    ICMPV6 = "ICMPV6"
    ALL = "ALL"

    @property
    def has_ports(self) -> bool:
        return self in (Protocol.TCP, Protocol.UDP)


IP_PROTOCOL_NUMBER: dict[Protocol, int] = {
    Protocol.TCP: 6,
    Protocol.UDP: 17,
    Protocol.ICMP: 1,
    Protocol.ICMPV6: 58,
}


class _Value(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PortRange(_Value):
    """An inclusive range of TCP/UDP ports, written "80-200" on the wire."""

    start: Annotated[int, Field(ge=1, le=65535)]
    end: Annotated[int, Field(ge=1, le=65535)]

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.start > self.end:
            raise ValueError(f"port range start {self.start} is greater than end {self.end}")
        return self

    @classmethod
    def parse(cls, text: str) -> PortRange:
        """Parse "80-200" or "80-80"; raises ValueError naming the problem."""
        parts = text.strip().split("-")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise ValueError(f"{text!r} is not a port range of the form START-END, e.g. 80-200")
        start, end = (int(p) for p in parts)
        for value in (start, end):
            if not 1 <= value <= 65535:
                raise ValueError(f"port {value} in {text!r} is outside 1-65535")
        return cls(start=start, end=end)

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and self.start <= port <= self.end

    def __str__(self) -> str:
        return f"{self.start}-{self.end}"


class Rule(_Value):
    """One rule of a mirror filter. Absent CIDRs and port ranges match anything."""

    id: str
    filter_id: str
    direction: Direction
    priority: Annotated[int, Field(ge=1, le=65535)]
    action: Action
    ethertype: EtherType
    protocol: Protocol
    source_cidr: IPNetwork | None = None
    destination_cidr: IPNetwork | None = None
    source_ports: PortRange | None = None
    destination_ports: PortRange | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        version = 4 if self.ethertype is EtherType.IPV4 else 6
        for name, cidr in (
            ("source_cidr_block", self.source_cidr),
            ("destination_cidr_block", self.destination_cidr),
        ):
            if cidr is not None and cidr.version != version:
                raise ValueError(f"{name} {cidr} is not an {self.ethertype} network")
        if not self.protocol.has_ports and (self.source_ports or self.destination_ports):
            raise ValueError(f"port ranges are only allowed with TCP or UDP, not {self.protocol}")
        if self.protocol is Protocol.ICMP and self.ethertype is EtherType.IPV6:
            raise ValueError("protocol ICMP needs ethertype IPv4 (use ICMPV6 for IPv6)")
        if self.protocol is Protocol.ICMPV6 and self.ethertype is EtherType.IPV4:
            raise ValueError("protocol ICMPV6 needs ethertype IPv6 (use ICMP for IPv4)")
        return self


class Filter(_Value):
    id: str
    name: str
    rules: tuple[Rule, ...] = ()

    def rules_for(self, direction: Direction) -> tuple[Rule, ...]:
        """This direction's rules in evaluation order (ascending priority)."""
        return tuple(
            sorted((r for r in self.rules if r.direction is direction), key=lambda r: r.priority)
        )


_THIS_NETWORK = ipaddress.IPv4Network("0.0.0.0/8")  # RFC 1122: a source, never a destination
_LIMITED_BROADCAST = ipaddress.IPv4Address("255.255.255.255")


def non_unicast_kind(address: IPAddress) -> str | None:
    """What kind of address `address` is when it does not name one host ("broadcast",
    "multicast", "unspecified", "loopback", "link-local"), else None. An IPv4-mapped IPv6
    address is judged by the IPv4 address it carries (the kernel sends it as IPv4)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address == _LIMITED_BROADCAST:
        return "broadcast"
    if address.is_multicast:
        return "multicast"
    if address.is_unspecified or (
        isinstance(address, ipaddress.IPv4Address) and address in _THIS_NETWORK
    ):
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    return None


_KIND_PHRASES = {
    "broadcast": "the limited broadcast address",
    "multicast": "a multicast address",
    "unspecified": "an unspecified address",
    "loopback": "a loopback address",
    "link-local": "a link-local address",
}


def address_refusal(address: str | IPAddress) -> str | None:
    """Why `address` cannot be a port's address, or None when it can.

    A port's address is where a target's copies are sent and the outer source of a
    source's, so it must name one host: the limited broadcast (255.255.255.255),
    multicast, unspecified (0.0.0.0/8, ::), loopback and link-local addresses are
    refused (`non_unicast_kind`).
    """
    if isinstance(address, str):
        try:
            address = ipaddress.ip_address(address.strip())
        except ValueError:
            return f"{address!r} is not an IP address"
    kind = non_unicast_kind(address)
    if kind is None:
        return None
    return f"{str(address)!r} is {_KIND_PHRASES[kind]}: a port needs a unicast address of one host"


def interface_refusal(interface: IPInterface) -> str | None:
    """`address_refusal` for an address given with its prefix ("10.0.0.255/24"), which
    also shows the subnet's own broadcast address (IPv4 prefixes shorter than /31)."""
    refusal = address_refusal(interface.ip)
    if refusal is not None:
        return refusal
    network = interface.network
    if (
        isinstance(network, ipaddress.IPv4Network)
        and network.prefixlen < 31
        and interface.ip == network.broadcast_address
    ):
        return (
            f"{str(interface.ip)!r} is the broadcast address of {network}: "
            "a port needs a unicast address of one host"
        )
    return None


class Port(_Value):
    """A network interface that sessions name as a source or a target."""

    id: str
    host: str
    device: str
    mac: str | None = None
    ipv4: tuple[str, ...] = ()
    ipv6: tuple[str, ...] = ()

    @property
    def address(self) -> str | None:
        """Where VXLAN for a target goes, and the outer source of a source: IPv4 first."""
        if self.ipv4:
            return self.ipv4[0]
        if self.ipv6:
            return self.ipv6[0]
        return None


class TargetKind(StrEnum):
    """What a session's `target_id` names (Huawei's `traffic_mirror_target_type`)."""

    ENI = "eni"  # a port
    ELB = "elb"  # a target group of collector ports sharing the flows (docs/elb.md)


class GroupMember(_Value):
    """One collector port of a target group, as an agent needs it.

    `number` is given by the server when the port joins the group and kept while it
    stays: it is what the kernel's placement table holds and what names the member's
    kernel entry and counters, so a change of the others' membership or health leaves it
    alone. `healthy` is the server's latest view (collector heartbeats, docs/elb.md)."""

    port_id: str
    number: Annotated[int, Field(ge=0, lt=MAX_GROUP_MEMBERS)]
    healthy: bool = True


class TargetGroup(_Value):
    """A group of collector ports that `elb` sessions mirror to, flow by flow."""

    id: str
    members: tuple[GroupMember, ...] = ()


class Session(_Value):
    id: str
    name: str
    filter_id: str
    sources: tuple[str, ...] = ()
    target_id: str
    target_kind: TargetKind = TargetKind.ENI
    vni: Annotated[int, Field(ge=0, le=16_777_215)] = DEFAULT_VNI
    packet_length: Annotated[int, Field(ge=1, le=1460)] = DEFAULT_PACKET_LENGTH
    priority: Annotated[int, Field(ge=1, le=32766)]
    enabled: bool = True


class DesiredState(_Value):
    """What one host's agent must make the kernel do.

    `ports` are the host's own ports; `sessions` are the sessions with at least
    one of those ports as a source; `filters` and `targets` are what those
    sessions reference. `revision` changes whenever any of it changes, so an
    agent can skip re-applying an unchanged state.
    """

    host: str
    revision: str
    ports: tuple[Port, ...] = ()
    sessions: tuple[Session, ...] = ()
    filters: tuple[Filter, ...] = ()
    targets: tuple[Port, ...] = ()
    # The groups that `elb` sessions name; their member ports are in `targets`.
    groups: tuple[TargetGroup, ...] = ()


class Interface(_Value):
    """What an agent reports about one of its host's network interfaces."""

    device: str
    mac: str | None = None
    ipv4: tuple[str, ...] = ()
    ipv6: tuple[str, ...] = ()


class Counter(_Value):
    # No docstring: the class is documented in the OpenAPI document as the counter report's
    # item, pinned by tests/api/test_openapi_snapshot.py.
    packets: CounterValue
    bytes: CounterValue
    # Sessions only: copies not sent because they could not be cut to packet_length
    # (docs/dataplane.md, "Truncation: exact, always"). Written only when not 0, as the
    # server answers them.
    uncut_packets: CounterValue = 0
    uncut_bytes: CounterValue = 0
    # `elb` sessions only: copies dropped because the group had no healthy member
    # (docs/elb.md). Written only when not 0, like the uncut pair.
    unplaced_packets: CounterValue = 0
    unplaced_bytes: CounterValue = 0

    @model_serializer(mode="wrap")
    def _without_zero_extras(self, handler: SerializerFunctionWrapHandler) -> dict[str, int]:
        data: dict[str, int] = handler(self)
        for packets, octets in (
            ("uncut_packets", "uncut_bytes"),
            ("unplaced_packets", "unplaced_bytes"),
        ):
            if not (data.get(packets) or data.get(octets)):
                data.pop(packets, None)
                data.pop(octets, None)
        return data


class SessionStats(_Value):
    """Counters summed over all hosts, and when each host last reported."""

    sessions: dict[str, Counter]
    rules: dict[str, Counter]
    hosts: dict[str, str]
    # `elb` sessions: per member, keyed "<session id>/<member port id>".
    members: dict[str, Counter] = Field(default_factory=dict)
