"""Checking a scenario's expectations against what the targets captured (pure).

Input: the decoded mirrored packets per target (from the pcap tcpdump wrote),
what each conversation's listener received (production must be intact), and
the security groups' drop counters. Output: one finding per expectation, each
either satisfied or failed with the reason, in words a network engineer can
act on ("the target's security group does not allow UDP 4789 from ...").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from vxtap.evaluate import Packet, explain, rule_mismatch
from vxtap.lab.scenario import Conversation, Expectation, Pattern, Scenario, shorten
from vxtap.lab.secgroups import allowing_rule
from vxtap.model import VXLAN_PORT, DesiredState, Direction, Port, Protocol


@dataclass(frozen=True)
class Mirrored:
    """One VXLAN datagram captured on a target's eth0, decoded."""

    target: str
    outer_src: str
    outer_dst: str
    vni: int
    protocol: Protocol | None  # None: an inner frame that is not TCP/UDP/ICMP over IP
    src: str | None
    dst: str | None
    sport: int | None
    dport: int | None
    payload_length: int | None
    frame_length: int | None = None  # bytes of the inner frame that arrived

    def describe(self) -> str:
        proto = self.protocol.value if self.protocol else "other"
        src = f"{self.src}{f'.{self.sport}' if self.sport is not None else ''}"
        dst = f"{self.dst}{f'.{self.dport}' if self.dport is not None else ''}"
        length = (
            f", payload length {self.payload_length}" if self.payload_length is not None else ""
        )
        frame = f", frame {self.frame_length} bytes" if self.frame_length is not None else ""
        return f"vni {self.vni} {proto} {src} > {dst}{length}{frame} (outer {self.outer_src})"


@dataclass(frozen=True)
class Delivery:
    """What a conversation's listener received, and what the client typed."""

    conversation: Conversation
    received: str
    answered: str = ""  # what the client received back


@dataclass(frozen=True)
class Finding:
    ok: bool
    what: str
    detail: str = ""

    def __str__(self) -> str:
        mark = "ok  " if self.ok else "FAIL"
        return f"{mark} {self.what}" + (f": {self.detail}" if self.detail else "")


def matches(pattern: Pattern, packet: Mirrored) -> bool:
    fields = ("vni", "protocol", "src", "dst", "sport", "dport", "payload_length", "frame_length")
    return all(
        getattr(pattern, name) is None or getattr(pattern, name) == getattr(packet, name)
        for name in fields
    )


def desired_state(scenario: Scenario) -> DesiredState:
    """The scenario's mirror configuration as one DesiredState (ports named
    HOST/DEVICE), so the reference evaluator can say why a packet was not
    mirrored."""
    ports = tuple(
        Port(id=s.port, host=s.name, device="eth0", mac=s.mac, ipv4=(s.ipv4,))
        for s in scenario.servers
    )
    return DesiredState(
        host="lab",
        revision="scenario",
        ports=ports,
        sessions=scenario.sessions,
        filters=scenario.filters,
        targets=ports,
    )


def _why_missing(scenario: Scenario, expectation: Expectation, dropped: Mapping[str, int]) -> str:
    """Every reason the lab can find why packets of `expectation` did not arrive."""
    target = scenario.server(expectation.target)
    pattern = expectation.pattern
    reasons: list[str] = []
    sessions = [
        s
        for s in scenario.sessions
        if scenario.server_by_port(s.target_id).name == target.name
        and (pattern.vni is None or s.vni == pattern.vni)
    ]
    if not sessions:
        reasons.append(f"no session mirrors to {target.name} with vni {pattern.vni}")
    for session in sessions:
        if not session.enabled:
            reasons.append(f"session {session.name} is disabled")
        for source_port in session.sources:
            source = scenario.server_by_port(source_port)
            if allowing_rule(scenario, target, Protocol.UDP, VXLAN_PORT, source.ipv4) is None:
                count = dropped.get(target.name, 0)
                reasons.append(
                    f"the target's security group does not allow UDP {VXLAN_PORT} from "
                    f"{source.ipv4} ({target.name}'s groups dropped {count} packets)"
                )
    verdict = _evaluate(scenario, pattern)
    if verdict:
        reasons.append(verdict)
    return "; ".join(reasons)


def _evaluate(scenario: Scenario, pattern: Pattern) -> str | None:
    """The reference evaluator's word on a packet like `pattern`, when it says
    such a packet is not mirrored."""
    if pattern.protocol not in (Protocol.TCP, Protocol.UDP) or not (pattern.src and pattern.dst):
        return None
    for session in scenario.sessions:
        for source_port in session.sources:
            source = scenario.server_by_port(source_port)
            if source.ipv4 not in (pattern.src, pattern.dst):
                continue
            direction = Direction.INGRESS if pattern.dst == source.ipv4 else Direction.EGRESS
            packet = Packet.ip(
                pattern.protocol,
                pattern.src,
                pattern.dst,
                pattern.sport or 40000,
                pattern.dport or 40000,
            )
            verdict = explain(desired_state(scenario), source_port, direction, packet)
            if not verdict.mirrored or verdict.vni != pattern.vni:
                tried = "; ".join(
                    _trial(
                        scenario,
                        session_id=t.session_id,
                        why=t.reason,
                        packet=packet,
                        direction=direction,
                        name=t.session_name,
                    )
                    for t in verdict.trials
                )
                return f"{source.name} {direction.value}, e.g. {packet}: {verdict.reason}" + (
                    f" ({tried})" if tried else ""
                )
    return None


def _trial(
    scenario: Scenario,
    *,
    session_id: str,
    why: str,
    packet: Packet,
    direction: Direction,
    name: str,
) -> str:
    """One session's part of the evaluator's verdict, with each rule's mismatch."""
    session = next(s for s in scenario.sessions if s.id == session_id)
    flt = next(f for f in scenario.filters if f.id == session.filter_id)
    mismatches = [
        f"rule {r.priority} {r.action.value}: {m}"
        for r in flt.rules_for(direction)
        if (m := rule_mismatch(r, packet)) is not None
    ]
    return f"{name}: {why}" + (f" [{'; '.join(mismatches)}]" if mismatches else "")


def check(
    scenario: Scenario,
    captured: Mapping[str, Sequence[Mirrored]],
    deliveries: Sequence[Delivery],
    dropped: Mapping[str, int] | None = None,
) -> list[Finding]:
    """All findings, production first, then each expectation in order, then
    whatever arrived that no expectation explains."""
    dropped = dropped or {}
    findings: list[Finding] = []
    for delivery in deliveries:
        c = delivery.conversation
        want = "".join(f"{line}\n" for line in c.lines)
        what = (
            f"{c.server} received what {c.client} sent over {c.protocol.value} {c.port} "
            f"({' / '.join(map(shorten, c.lines))})"
        )
        if delivery.received == want:
            findings.append(Finding(True, what))
        else:
            findings.append(
                Finding(False, what, f"it received {delivery.received!r}, expected {want!r}")
            )
        if c.replies:
            back = "".join(f"{line}\n" for line in c.replies)
            answers = " / ".join(map(shorten, c.replies))
            what = f"{c.client} received the answers of {c.server} ({answers})"
            if delivery.answered == back:
                findings.append(Finding(True, what))
            else:
                findings.append(
                    Finding(False, what, f"it received {delivery.answered!r}, expected {back!r}")
                )

    for name in scenario.targets:
        target = scenario.server(name)
        for packet in captured.get(name, ()):
            if packet.outer_dst != target.ipv4:
                findings.append(
                    Finding(
                        False,
                        f"VXLAN at {name} is addressed to it",
                        f"{packet.describe()} has outer destination {packet.outer_dst}",
                    )
                )

    for expectation in scenario.expectations:
        got = [p for p in captured.get(expectation.target, ()) if matches(expectation.pattern, p)]
        if expectation.count is None:
            continue
        if len(got) == expectation.count:
            findings.append(Finding(True, expectation.describe(), f"{len(got)} arrived"))
            continue
        if expectation.count == 0:
            sample = "; ".join(p.describe() for p in got[:3])
            findings.append(
                Finding(False, expectation.describe(), f"{len(got)} arrived, e.g. {sample}")
            )
            continue
        if not got and not captured.get(expectation.target):
            detail = "nothing arrived"
        else:
            detail = f"{len(got)} arrived"
        if len(got) < expectation.count:
            why = _why_missing(scenario, expectation, dropped)
            if why:
                detail = f"{why}: {detail}"
        findings.append(Finding(False, expectation.describe(), detail))

    for name in scenario.targets:
        explained = [
            e.pattern
            for e in scenario.expectations
            if e.target == name and (e.count is None or e.count > 0)
        ]
        forbidden = [e.pattern for e in scenario.expectations if e.target == name and e.count == 0]
        stray = [
            p
            for p in captured.get(name, ())
            if not any(matches(pat, p) for pat in explained)
            and not any(matches(pat, p) for pat in forbidden)  # already reported above
        ]
        if stray:
            sample = "; ".join(p.describe() for p in stray[:3])
            findings.append(
                Finding(False, f"nothing unexpected arrives at {name}", f"{len(stray)}: {sample}")
            )
        else:
            findings.append(Finding(True, f"nothing unexpected arrives at {name}"))
    return findings
