"""Copies the data plane could not cut (docs/dataplane.md, "Truncation: exact, always"):
from an agent's counter report to `vxtap session stats` and the agent's `/metrics`."""

from __future__ import annotations

from typing import Any

from click.testing import CliRunner
from prometheus_client import generate_latest

from vxtap.agent.metrics import AgentMetrics
from vxtap.cli import main
from vxtap.client import VxtapClient
from vxtap.model import Counter, Interface


def test_uncut_copies_are_summed_over_hosts_and_shown(api_server: Any) -> None:
    with VxtapClient(
        api_server.endpoint, api_server.ak, api_server.sk, api_server.project_id
    ) as client:
        target = client.create_port("ecs-target", "eth0", ipv4=["192.168.0.164"])
        sources = [
            client.register_ports(host, [Interface(device="eth0", ipv4=(address,))])[0]
            for host, address in (("host-a", "192.168.0.10"), ("host-b", "192.168.0.11"))
        ]
        flt = client.create_filter("f")
        rule = client.create_rule(flt["id"], direction="ingress", priority=1, protocol="TCP")
        session = client.create_session(
            "small", filter_id=flt["id"], sources=[s.id for s in sources],
            target_id=target.id, priority=1, packet_length=20,
        )  # fmt: skip
        for host, uncut in (("host-a", 3), ("host-b", 4)):
            totals = Counter(packets=10, bytes=1000, uncut_packets=uncut, uncut_bytes=uncut * 60)
            client.report_counters(
                host, {session["id"]: totals}, {rule["id"]: Counter(packets=10, bytes=1000)}
            )
        stats = client.session_stats()
        # Sessions with nothing uncut answer as before: packets and bytes only.
        other = client.create_session(
            "other", filter_id=flt["id"], sources=[sources[0].id], target_id=target.id,
            priority=2,
        )  # fmt: skip
        client.report_counters(
            "host-a",
            {
                session["id"]: Counter(packets=10, bytes=1000, uncut_packets=3, uncut_bytes=180),
                other["id"]: Counter(packets=1, bytes=100),
            },
            {},
        )
        raw = client.session_stats().model_dump(mode="json")["sessions"]
    assert raw[other["id"]] == {"packets": 1, "bytes": 100}
    assert raw[session["id"]]["uncut_packets"] == 7
    assert stats.sessions[session["id"]] == Counter(
        packets=20, bytes=2000, uncut_packets=7, uncut_bytes=420
    )
    assert stats.rules[rule["id"]] == Counter(packets=20, bytes=2000)
    creds = ["--endpoint", api_server.endpoint, "--ak", api_server.ak, "--sk", api_server.sk]
    creds += ["--project-id", api_server.project_id]
    shown = CliRunner().invoke(main, ["session", "stats", *creds])
    assert shown.exit_code == 0, shown.output
    assert "UNCUT" in shown.output
    row = next(line for line in shown.output.splitlines() if session["id"] in line)
    assert row.split()[-4:] == ["20", "2000", "7", "0"]


def test_metrics_show_uncut_copies_per_session() -> None:
    metrics = AgentMetrics()
    metrics.kernel.sessions = {"s1": Counter(packets=5, bytes=500, uncut_packets=2, uncut_bytes=80)}
    text = generate_latest(metrics.registry).decode()
    assert 'vxtap_session_uncut_packets_total{session_id="s1",session_name="",vni=""} 2.0' in text
    assert 'vxtap_session_uncut_bytes_total{session_id="s1",session_name="",vni=""} 80.0' in text
