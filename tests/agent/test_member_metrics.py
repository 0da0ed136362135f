"""The agent's /metrics: per-member series of `elb` sessions and the unplaced copies."""

from __future__ import annotations

from prometheus_client import generate_latest

from vxtap.agent.metrics import AgentMetrics
from vxtap.model import Counter


def test_member_series_and_unplaced_copies() -> None:
    metrics = AgentMetrics()
    metrics.kernel.sessions = {
        "s1": Counter(packets=10, bytes=1000, unplaced_packets=2, unplaced_bytes=200),
        "s2": Counter(packets=1, bytes=100),
    }
    metrics.kernel.members = {
        "s1/p1": Counter(packets=5, bytes=500),
        "s1/p2": Counter(packets=3, bytes=300),
    }
    text = generate_latest(metrics.registry).decode()
    assert 'vxtap_member_packets_total{port_id="p1",session_id="s1",session_name=""} 5.0' in text
    assert 'vxtap_member_bytes_total{port_id="p2",session_id="s1",session_name=""} 300.0' in text
    unplaced = 'vxtap_session_unplaced_packets_total{session_id="s1",session_name="",vni=""} 2.0'
    assert unplaced in text
    assert 'vxtap_session_unplaced_packets_total{session_id="s2"' not in text  # none: no series
