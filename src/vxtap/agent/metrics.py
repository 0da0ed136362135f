"""The agent's Prometheus metrics, in a registry of its own (tests run several agents)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, start_http_server
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from vxtap.model import Counter as Totals
from vxtap.model import DesiredState


@dataclass
class KernelCounters:
    """The latest per-session and per-rule totals read from the kernel, with names for labels."""

    sessions: Mapping[str, Totals] = field(default_factory=dict)
    rules: Mapping[str, Totals] = field(default_factory=dict)
    state: DesiredState | None = None
    # `elb` sessions: the copies sent to each member, "<session id>/<member port id>"
    # (as reported to the server, docs/elb.md).
    members: Mapping[str, Totals] = field(default_factory=dict)


class _KernelCounterCollector(Collector):
    """Exposes the kernel's own counters as Prometheus counters, read at the last report."""

    def __init__(self, latest: KernelCounters) -> None:
        self.latest = latest

    def collect(self) -> Iterator[CounterMetricFamily]:
        latest = self.latest
        names = {s.id: s for s in latest.state.sessions} if latest.state else {}
        rule_filter = (
            {r.id: f.id for f in latest.state.filters for r in f.rules} if latest.state else {}
        )
        session_labels = ["session_id", "session_name", "vni"]
        packets = CounterMetricFamily(
            "vxtap_session_packets", "Packets mirrored by each session", labels=session_labels
        )
        octets = CounterMetricFamily(
            "vxtap_session_bytes",
            "Bytes of mirrored packets (before truncation) per session",
            labels=session_labels,
        )
        uncut_packets = CounterMetricFamily(
            "vxtap_session_uncut_packets",
            "Copies not sent because they could not be cut to packet_length, per session",
            labels=session_labels,
        )
        uncut_octets = CounterMetricFamily(
            "vxtap_session_uncut_bytes",
            "Bytes of the copies not sent because they could not be cut, per session",
            labels=session_labels,
        )
        unplaced_packets = CounterMetricFamily(
            "vxtap_session_unplaced_packets",
            "Copies dropped because the session's target group had no healthy member",
            labels=session_labels,
        )
        unplaced_octets = CounterMetricFamily(
            "vxtap_session_unplaced_bytes",
            "Bytes of the copies dropped because the target group had no healthy member",
            labels=session_labels,
        )
        for session_id, totals in sorted(latest.sessions.items()):
            session = names.get(session_id)
            labels = [
                session_id,
                session.name if session else "",
                str(session.vni) if session else "",
            ]
            packets.add_metric(labels, totals.packets)
            octets.add_metric(labels, totals.bytes)
            uncut_packets.add_metric(labels, totals.uncut_packets)
            uncut_octets.add_metric(labels, totals.uncut_bytes)
            # Only sessions to a group can have unplaced copies: no series for the others.
            if totals.unplaced_packets or totals.unplaced_bytes:
                unplaced_packets.add_metric(labels, totals.unplaced_packets)
                unplaced_octets.add_metric(labels, totals.unplaced_bytes)
        rule_labels = ["rule_id", "filter_id"]
        rule_packets = CounterMetricFamily(
            "vxtap_rule_packets", "Packets matched by each filter rule", labels=rule_labels
        )
        rule_octets = CounterMetricFamily(
            "vxtap_rule_bytes", "Bytes of packets matched by each filter rule", labels=rule_labels
        )
        for rule_id, totals in sorted(latest.rules.items()):
            labels = [rule_id, rule_filter.get(rule_id, "")]
            rule_packets.add_metric(labels, totals.packets)
            rule_octets.add_metric(labels, totals.bytes)
        member_labels = ["session_id", "session_name", "port_id"]
        member_packets = CounterMetricFamily(
            "vxtap_member_packets",
            "Copies an elb session sent to each member of its target group",
            labels=member_labels,
        )
        member_octets = CounterMetricFamily(
            "vxtap_member_bytes",
            "Bytes (before truncation) an elb session sent to each member of its target group",
            labels=member_labels,
        )
        for key, totals in sorted(latest.members.items()):
            session_id, _, port_id = key.partition("/")
            session = names.get(session_id)
            labels = [session_id, session.name if session else "", port_id]
            member_packets.add_metric(labels, totals.packets)
            member_octets.add_metric(labels, totals.bytes)
        yield from (packets, octets, uncut_packets, uncut_octets, rule_packets, rule_octets)
        yield from (unplaced_packets, unplaced_octets, member_packets, member_octets)


class AgentMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.applies = Counter(
            "vxtap_agent_applies", "Plans applied to the kernel, by reason", ["reason"], registry=r
        )
        self.apply_seconds = Histogram(
            "vxtap_agent_apply_duration_seconds",
            "Time to compile and apply a plan",
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
        )
        self.errors = Counter(
            "vxtap_agent_errors", "Failures, by what failed", ["kind"], registry=r
        )
        self.last_sync = Gauge(
            "vxtap_agent_last_sync_timestamp_seconds",
            "Unix time of the last desired state received from the server",
            registry=r,
        )
        self.last_apply = Gauge(
            "vxtap_agent_last_apply_timestamp_seconds",
            "Unix time the kernel last matched the desired state",
            registry=r,
        )
        self.server_reachable = Gauge(
            "vxtap_agent_server_reachable",
            "1 when the last request to the server got a valid answer",
            registry=r,
        )
        self.failed_fetches = Counter(
            "vxtap_agent_failed_fetches",
            "Desired-state requests that got no valid answer, by why "
            "(unreachable, refused, invalid)",
            ["reason"],
            registry=r,
        )
        self.credential_refused = Gauge(
            "vxtap_agent_credential_refused",
            "1 while the server refuses this host's credential (revoked, or another host's key)",
            registry=r,
        )
        self.applied = Info(
            "vxtap_agent_applied", "The desired-state revision the kernel shows", registry=r
        )
        self.sessions = Gauge(
            "vxtap_agent_sessions", "Sessions in the applied desired state", registry=r
        )
        self.refused_states = Counter(
            "vxtap_agent_refused_states",
            "Desired states refused as a whole: beyond the documented limits",
            registry=r,
        )
        self.refused_sessions = Gauge(
            "vxtap_agent_refused_sessions",
            "Sessions of the applied state left out: their target is not a unicast address",
            registry=r,
        )
        self.kernel = KernelCounters()
        r.register(_KernelCounterCollector(self.kernel))

    def serve(self, address: str, port: int) -> None:
        """Serve /metrics from a background thread."""
        start_http_server(port, addr=address, registry=self.registry)
