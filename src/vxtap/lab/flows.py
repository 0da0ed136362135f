"""The `elb` scenario's checks on flows (pure): which collector each flow reached, each
mirrored packet once, the spread, and what a stopped collector did to the flows.

Input: the production packets the source sent (tcpdump on its eth0) and the copies
each member's eth0 received (tcpdump there, `udp port 4789`), decoded by tshark into
`Packet`s. A *flow* is the direction-less five-tuple (both directions of a connection
are one flow, as the placement hashes them); a packet's *identity* is what tells two
packets of one flow apart (IP id and length, TCP sequence and acknowledgement numbers),
so a copy can be matched with the packet it copies.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

Endpoint = tuple[str, int]
# protocol, and the two endpoints in sorted order: the same for both directions.
Flow = tuple[str, Endpoint, Endpoint]
# The flow's direction (source endpoint first), and the header fields that differ
# between the packets of one direction.
Identity = tuple[str, Endpoint, Endpoint, int, int, int, int]

# How far above the mean the busiest member's flow count may be, in standard deviations
# of a fair hash's binomial spread (docs/lab.md, "The elb scenario"): a fair placement
# exceeds 4 sigma with a probability of about 3e-5 per member.
BALANCE_SIGMAS = 4.0


@dataclass(frozen=True)
class Packet:
    """One production packet (`at` = "" at the source) or one copy of it at a member."""

    at: str
    time: float
    protocol: str  # "TCP" or "UDP"
    src: Endpoint
    dst: Endpoint
    ip_id: int
    ip_length: int
    seq: int = 0  # TCP only
    ack: int = 0

    @property
    def flow(self) -> Flow:
        low, high = sorted((self.src, self.dst))
        return (self.protocol, low, high)

    @property
    def identity(self) -> Identity:
        return (self.protocol, self.src, self.dst, self.ip_id, self.ip_length, self.seq, self.ack)


def describe_flow(flow: Flow) -> str:
    protocol, (a, ap), (b, bp) = flow
    return f"{protocol} {a}.{ap} <> {b}.{bp}"


def members_by_flow(copies: Iterable[Packet]) -> dict[Flow, Counter[str]]:
    """Each flow's copies counted per member that received them."""
    out: dict[Flow, Counter[str]] = defaultdict(Counter)
    for copy in copies:
        out[copy.flow][copy.at] += 1
    return dict(out)


def flows_on_several(by_flow: Mapping[Flow, Counter[str]]) -> dict[Flow, Counter[str]]:
    """The flows whose copies reached more than one member (each should reach one)."""
    return {flow: members for flow, members in by_flow.items() if len(members) > 1}


@dataclass(frozen=True)
class Delivery:
    """Sent packets against their copies: what arrived nowhere, what arrived twice."""

    sent: int
    arrived: int
    missing: Counter[Identity]  # sent, no copy arrived anywhere
    extra: Counter[Identity]  # copies beyond one per sent packet (or of nothing sent)

    @property
    def exact(self) -> bool:
        return not self.missing and not self.extra


def delivery(sent: Iterable[Packet], copies: Iterable[Packet]) -> Delivery:
    """Every sent packet must have exactly one copy, at any member."""
    want = Counter(p.identity for p in sent)
    got = Counter(c.identity for c in copies)
    return Delivery(sum(want.values()), sum(got.values()), want - got, got - want)


def shares(counts: Mapping[str, int]) -> dict[str, float]:
    """Each member's fraction of the total (0 for all when the total is 0)."""
    total = sum(counts.values())
    return {name: (count / total if total else 0.0) for name, count in counts.items()}


def max_over_mean(counts: Mapping[str, int]) -> float:
    if not counts or not sum(counts.values()):
        return math.inf
    mean = sum(counts.values()) / len(counts)
    return max(counts.values()) / mean


def balance_bound(flows: int, members: int, sigmas: float = BALANCE_SIGMAS) -> float:
    """The max/mean of flows per member that a fair hash stays under, except with a
    tiny probability: each member's count is binomial(flows, 1/members), whose standard
    deviation relative to the mean is sqrt((members - 1) / flows)."""
    if flows <= 0 or members <= 1:
        return math.inf if flows <= 0 else 1.0
    return 1.0 + sigmas * math.sqrt((members - 1) / flows)


def owner_before(by_time: Iterable[Packet], moment: float) -> dict[Flow, str]:
    """The member each flow's copies went to before `moment` (the last one, when the
    flow reached several)."""
    owner: dict[Flow, tuple[float, str]] = {}
    for copy in by_time:
        if copy.time < moment and (copy.flow not in owner or owner[copy.flow][0] <= copy.time):
            owner[copy.flow] = (copy.time, copy.at)
    return {flow: at for flow, (_, at) in owner.items()}


@dataclass(frozen=True)
class Outage:
    """What a member's outage did, measured on the copies' own timestamps."""

    member: str
    stopped: float  # when its collector was stopped
    restarted: float | None  # when it was started again
    last_to_dead: float | None  # the last copy that still went to it after the stop
    first_moved: float | None  # the first copy of one of its flows at another member
    its_flows: frozenset[Flow]  # the flows it had before the stop
    moved_to: dict[Flow, str]  # where each of its flows went during the outage
    strays: dict[Flow, tuple[str, str]]  # other flows that changed member: (before, after)
    returned: frozenset[Flow]  # its flows back on it after the restart
    not_returned: frozenset[Flow]  # its flows with copies after the restart elsewhere only

    @property
    def out_after(self) -> float | None:
        """Seconds from the stop to the last copy sent to the stopped member."""
        return None if self.last_to_dead is None else self.last_to_dead - self.stopped

    @property
    def moved_after(self) -> float | None:
        """Seconds from the stop to the first copy of its flows at another member."""
        return None if self.first_moved is None else self.first_moved - self.stopped

    @property
    def failover(self) -> float | None:
        """Seconds until the stopped member was out: the later of the two."""
        times = [t for t in (self.out_after, self.moved_after) if t is not None]
        return max(times) if times else None


def outage(
    copies: Sequence[Packet],
    member: str,
    stopped: float,
    restarted: float | None = None,
    settle: float = 0.0,
) -> Outage:
    """Which flows moved when `member` stopped at `stopped` (and came back at
    `restarted`). `settle`: seconds after the restart in which its flows may still
    arrive elsewhere (the time it takes the member to be healthy and placed again)."""
    ordered = sorted(copies, key=lambda c: c.time)
    before = owner_before(ordered, stopped)
    its_flows = frozenset(f for f, at in before.items() if at == member)
    outage_end = restarted if restarted is not None else math.inf
    last_to_dead: float | None = None
    first_moved: float | None = None
    moved_to: dict[Flow, str] = {}
    strays: dict[Flow, tuple[str, str]] = {}
    after_restart: dict[Flow, set[str]] = defaultdict(set)
    for copy in ordered:
        if copy.time < stopped:
            continue
        flow = copy.flow
        if copy.time < outage_end:
            if copy.at == member:
                last_to_dead = copy.time
            elif flow in its_flows:
                if first_moved is None:
                    first_moved = copy.time
                moved_to.setdefault(flow, copy.at)
        elif restarted is not None and copy.time >= restarted + settle:
            after_restart[flow].add(copy.at)
        owner = before.get(flow)
        if owner is not None and owner != member and copy.at != owner:
            strays.setdefault(flow, (owner, copy.at))
    returned = frozenset(f for f in its_flows if after_restart.get(f) == {member})
    not_returned = frozenset(
        f for f in its_flows if after_restart.get(f) and member not in after_restart[f]
    )
    return Outage(
        member,
        stopped,
        restarted,
        last_to_dead,
        first_moved,
        its_flows,
        moved_to,
        strays,
        returned,
        not_returned,
    )


def lost(sent: Iterable[Packet], copies: Iterable[Packet], member: str) -> list[Packet]:
    """The sent packets whose only copy went to `member` (e.g. while it was down)."""
    at_member = Counter(c.identity for c in copies if c.at == member)
    return [p for p in sent if at_member[p.identity] > 0]


def parse_fields(text: str, at: str, *, encapsulated: bool) -> list[Packet]:
    """tshark's fields (`FIELDS`, one frame a line, occurrences joined by ",") ->
    packets; for VXLAN copies the inner headers (the second occurrence of each IP and
    UDP field). Frames that are not TCP or UDP over IPv4 are skipped."""
    inner = 1 if encapsulated else 0
    packets: list[Packet] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        cols = dict(
            zip(FIELDS, (line.split("\t") + [""] * len(FIELDS))[: len(FIELDS)], strict=True)
        )
        values = {name: cols[name].split(",") if cols[name] else [] for name in FIELDS}
        if len(values["ip.proto"]) <= inner:
            continue
        proto = int(values["ip.proto"][inner])
        if proto == 6 and values["tcp.srcport"]:
            protocol = "TCP"
            sport, dport = int(values["tcp.srcport"][0]), int(values["tcp.dstport"][0])
            seq = int(values["tcp.seq_raw"][0]) if values["tcp.seq_raw"] else 0
            ack = int(values["tcp.ack_raw"][0]) if values["tcp.ack_raw"] else 0
        elif proto == 17 and len(values["udp.srcport"]) > inner:
            protocol = "UDP"
            sport, dport = int(values["udp.srcport"][inner]), int(values["udp.dstport"][inner])
            seq = ack = 0
        else:
            continue
        packets.append(
            Packet(
                at=at,
                time=float(values["frame.time_epoch"][0]),
                protocol=protocol,
                src=(values["ip.src"][inner], sport),
                dst=(values["ip.dst"][inner], dport),
                ip_id=int(values["ip.id"][inner], 0),
                ip_length=int(values["ip.len"][inner]),
                seq=seq,
                ack=ack,
            )
        )
    return packets


FIELDS = (
    "frame.time_epoch",
    "ip.src",
    "ip.dst",
    "ip.proto",
    "ip.id",
    "ip.len",
    "tcp.srcport",
    "tcp.dstport",
    "tcp.seq_raw",
    "tcp.ack_raw",
    "udp.srcport",
    "udp.dstport",
)
