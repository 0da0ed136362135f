"""The `elb` scenario's checks on flows (pure): which collector each flow reached, each
mirrored packet once, the spread, and what a stopped collector did to the flows.

Input: the production packets the source sent (tcpdump on its eth0) and the copies
each member's eth0 received (tcpdump there, `udp port 4789`), decoded by tshark into
`CapturedPacket`s. A *flow* is the direction-less five-tuple (both directions of a connection
are one flow, as the placement hashes them); a packet's *identity* is what tells two
packets of one flow apart (IP id and length, TCP sequence and acknowledgement numbers),
so a copy can be matched with the packet it copies.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from vxtap.lab.verify import Finding

Endpoint = tuple[str, int]
# protocol, and the two endpoints in sorted order: the same for both directions.
Flow = tuple[str, Endpoint, Endpoint]
# The flow's direction (source endpoint first), and the header fields that differ
# between the packets of one direction.
Identity = tuple[str, Endpoint, Endpoint, int, int, int, int]

# How far above the mean the busiest member's flow count may be, in standard deviations
# of a fair hash's binomial spread (docs/lab.md, "The elb scenario"): a fair placement
# exceeds 5 sigma with a probability of about 3e-7 per member.
BALANCE_SIGMAS = 5.0


@dataclass(frozen=True)
class CapturedPacket:
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


def members_by_flow(copies: Iterable[CapturedPacket]) -> dict[Flow, Counter[str]]:
    """Each flow's copies counted per member that received them."""
    out: dict[Flow, Counter[str]] = defaultdict(Counter)
    for copy in copies:
        out[copy.flow][copy.at] += 1
    return dict(out)


def flows_on_several(by_flow: Mapping[Flow, Counter[str]]) -> dict[Flow, Counter[str]]:
    """The flows whose copies reached more than one member (each should reach one)."""
    return {flow: members for flow, members in by_flow.items() if len(members) > 1}


@dataclass(frozen=True)
class CopyTally:
    """Sent packets against their copies: what arrived nowhere, what arrived twice."""

    sent: int
    arrived: int
    missing: Counter[Identity]  # sent, no copy arrived anywhere
    extra: Counter[Identity]  # copies beyond one per sent packet (or of nothing sent)

    @property
    def exact(self) -> bool:
        return not self.missing and not self.extra


def delivery(sent: Iterable[CapturedPacket], copies: Iterable[CapturedPacket]) -> CopyTally:
    """Every sent packet must have exactly one copy, at any member."""
    want = Counter(p.identity for p in sent)
    got = Counter(c.identity for c in copies)
    return CopyTally(sum(want.values()), sum(got.values()), want - got, got - want)


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


def owner_before(by_time: Iterable[CapturedPacket], moment: float) -> dict[Flow, str]:
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
    copies: Sequence[CapturedPacket],
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


def lost(
    sent: Iterable[CapturedPacket], copies: Iterable[CapturedPacket], member: str
) -> list[CapturedPacket]:
    """The sent packets whose only copy went to `member` (e.g. while it was down)."""
    at_member = Counter(c.identity for c in copies if c.at == member)
    return [p for p in sent if at_member[p.identity] > 0]


def capture_drops(log: str) -> int | None:
    """What tcpdump's closing summary says it dropped ("N packets dropped by kernel"),
    None when it printed none (it did not end cleanly)."""
    for line in log.splitlines():
        words = line.split()
        if words[1:] == ["packets", "dropped", "by", "kernel"] and words[0].isdigit():
            return int(words[0])
    return None


def parse_fields(text: str, at: str, *, encapsulated: bool) -> list[CapturedPacket]:
    """tshark's fields (`FIELDS`, one frame a line, occurrences joined by ",") ->
    packets; for VXLAN copies the inner headers (the second occurrence of each IP and
    UDP field). Frames that are not TCP or UDP over IPv4 are skipped."""
    inner = 1 if encapsulated else 0
    packets: list[CapturedPacket] = []
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
            CapturedPacket(
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


# --- the verdicts, as the lab prints them --------------------------------------------

# Issue 12's aim: a member that stops receiving is out of every source's table within 3 s.
FAILOVER_AIM_S = 3.0


@dataclass(frozen=True)
class OutageTimes:
    """When `verify` stopped a member's collector, started it again, and when the
    source's agent had applied the member as healthy again."""

    member: str
    stopped: float
    restarted: float
    placed_again: float


def _flows_text(items: Iterable[Flow], limit: int = 3) -> str:
    listed = sorted(items)
    sample = "; ".join(describe_flow(f) for f in listed[:limit])
    return f"{len(listed)}, e.g. {sample}" if listed else "none"


def group_findings(
    sent: Sequence[CapturedPacket],
    copies: Sequence[CapturedPacket],
    members: Sequence[str],
    *,
    flows_expected: int,
    counted: Mapping[str, int] | None,
    stored: Mapping[str, int],
    down: OutageTimes | None = None,
    capture_logs: Mapping[str, str] | None = None,
) -> list[Finding]:
    """Every check of the `elb` scenario: `sent` are the packets the source sent and
    received on the loads' ports, `copies` what each member's eth0 received, `counted`
    the agent's per-member counters (`vxtap session stats`; None: not reported),
    `stored` what each member's collector stored (members left out are not checked),
    `capture_logs` each tcpdump's output by where it ran (its drop count)."""
    findings: list[Finding] = []
    if capture_logs is not None:
        drops = {at: capture_drops(log) for at, log in capture_logs.items()}
        findings.append(
            Finding(
                all(d == 0 for d in drops.values()),
                "tcpdump dropped nothing at the source and the members (it is the judge)",
                ", ".join(f"{at}: {'no summary' if d is None else d}" for at, d in drops.items()),
            )
        )
    sent_flows = {p.flow for p in sent}
    findings.append(
        Finding(
            len(sent_flows) >= flows_expected,
            f"the source sent and received {len(sent)} packets in at least {flows_expected} flows",
            f"{len(sent_flows)} flows",
        )
    )
    arrived = delivery(sent, copies)
    what = "every packet of those flows was mirrored once, to one member"
    if arrived.exact:
        findings.append(Finding(True, what, f"{arrived.arrived} copies of {arrived.sent}"))
    else:
        findings.append(
            Finding(
                False,
                what,
                f"{sum(arrived.missing.values())} sent without a copy, "
                f"{sum(arrived.extra.values())} copies too many (of {arrived.sent} sent)",
            )
        )
    by_flow = members_by_flow(copies)
    stray_flows = {p.flow for p in copies} - sent_flows
    findings.append(
        Finding(
            not stray_flows, "no copy of a flow the source did not send", _flows_text(stray_flows)
        )
    )
    result: Outage | None = None
    unreached = sent_flows - set(by_flow)
    if down is None:
        several = flows_on_several(by_flow)
        problems = [f"on several: {_flows_text(several)}"] if several else []
        problems += [f"on none: {_flows_text(unreached)}"] if unreached else []
        findings.append(
            Finding(
                not several and not unreached,
                "every flow's packets, both directions, reached exactly one member",
                "; ".join(problems) or f"{len(by_flow)} flows",
            )
        )
        owners = {flow: next(iter(at)) for flow, at in by_flow.items()}
    else:
        settle = max(0.0, down.placed_again - down.restarted)
        result = outage(copies, down.member, down.stopped, down.restarted, settle)
        owners = owner_before(sorted(copies, key=lambda c: c.time), down.stopped)
        findings.append(
            Finding(
                not unreached,
                "every flow reached a member",
                f"on none: {_flows_text(unreached)}" if unreached else f"{len(by_flow)} flows",
            )
        )
    flows_per_member = Counter({m: 0 for m in members})
    flows_per_member.update(owners.values())
    packets_per_member = Counter({m: 0 for m in members})
    packets_per_member.update(c.at for c in copies)
    bound = balance_bound(len(owners), len(members))
    ratio = max_over_mean(flows_per_member)
    flow_shares, packet_shares = shares(flows_per_member), shares(packets_per_member)
    spread = ", ".join(
        f"{m} {flows_per_member[m]} flows ({flow_shares[m]:.0%}), "
        f"{packets_per_member[m]} copies ({packet_shares[m]:.0%})"
        for m in members
    )
    findings.append(
        Finding(
            all(flows_per_member[m] > 0 for m in members) and ratio <= bound,
            f"the load is spread: every member has flows, max/mean of flows per member "
            f"<= {bound:.2f} (a fair hash's binomial spread + {BALANCE_SIGMAS:g} sigma)",
            f"max/mean {ratio:.2f}; {spread}",
        )
    )
    if counted is not None:
        for member in members:
            findings.append(
                Finding(
                    counted.get(member) == packets_per_member[member],
                    f"vxtap session stats counts for {member} the copies that arrived there",
                    f"counted {counted.get(member, 'nothing')}, "
                    f"arrived {packets_per_member[member]}",
                )
            )
    else:
        findings.append(
            Finding(False, "vxtap session stats counts every member's copies", "no report")
        )
    for member, count in stored.items():
        findings.append(
            Finding(
                count == packets_per_member[member],
                f"the collector on {member} stored every copy that arrived there",
                f"stored {count}, arrived {packets_per_member[member]}",
            )
        )
    if down is not None and result is not None:
        findings += _outage_findings(sent, copies, result)
    return findings


def _outage_findings(
    sent: Sequence[CapturedPacket], copies: Sequence[CapturedPacket], result: Outage
) -> list[Finding]:
    member = result.member
    findings: list[Finding] = []
    failover = result.failover
    findings.append(
        Finding(
            failover is not None and failover <= FAILOVER_AIM_S,
            f"{member} was out of the placement within {FAILOVER_AIM_S:g} s "
            "of its collector's stop",
            "no copy of its flows after the stop"
            if failover is None
            else f"failover {failover:.2f} s (last copy to it {_seconds(result.out_after)}, "
            f"first of its flows elsewhere {_seconds(result.moved_after)})",
        )
    )
    unmoved = result.its_flows - set(result.moved_to)
    findings.append(
        Finding(
            bool(result.its_flows) and bool(result.moved_to),
            f"the {len(result.its_flows)} flows of {member} moved to the other members",
            f"{len(result.moved_to)} moved ("
            + ", ".join(f"{m} {n}" for m, n in sorted(Counter(result.moved_to.values()).items()))
            + f"); without copies during the outage: {len(unmoved)}",
        )
    )
    findings.append(
        Finding(
            not result.strays,
            "no other flow changed member",
            _flows_text(result.strays),
        )
    )
    window_end = result.stopped + FAILOVER_AIM_S
    late = [
        c
        for c in copies
        if c.at == member
        and result.stopped <= c.time
        and (result.restarted is None or c.time < result.restarted)
        and c.time > window_end
    ]
    lost_count = sum(
        1
        for c in copies
        if c.at == member
        and result.stopped <= c.time
        and (result.restarted is None or c.time < result.restarted)
    )
    findings.append(
        Finding(
            not late,
            "nothing was lost beyond the failover window",
            f"{lost_count} copies went to {member} while its collector was stopped, "
            f"{len(late)} of them later than {FAILOVER_AIM_S:g} s after the stop",
        )
    )
    if result.restarted is not None:
        findings.append(
            Finding(
                bool(result.returned) and not result.not_returned,
                f"after {member}'s collector was back, its flows returned to it",
                f"{len(result.returned)} returned, "
                f"still elsewhere: {_flows_text(result.not_returned)}",
            )
        )
    return findings


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"
