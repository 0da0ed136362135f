"""`vxtap explain`: packet options, and the verdict against a real server's desired state."""

from __future__ import annotations

import ipaddress
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, update

from vxtap.cli import main
from vxtap.client import VxtapClient
from vxtap.dataplane.placement import build_table, flow_hash, flow_key, placement
from vxtap.model import Interface
from vxtap.store.schema import MemberRow

CREDS = ["--endpoint", "http://127.0.0.1:9", "--ak", "a", "--sk", "s", "--project-id", "p"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--protocol", "sctp", "--src", "10.0.0.1", "--dst", "10.0.0.2"], "--protocol 'sctp'"),
        (["--protocol", "tcp", "--src", "10.0.0.1", "--dst", "10.0.0.2"], "needs sport and dport"),
        (["--protocol", "icmp", "--src", "10.0.0.1", "--dst", "::1"], "dst ::1 is not an IPv4"),
        (["--protocol", "tcp", "--src", "10.0.0.300", "--dst", "10.0.0.2"], "10.0.0.300"),
        (["--src", "10.0.0.1"], "needs --protocol, --src and --dst"),
        (["--ethertype", "arp", "--src", "10.0.0.1"], "non-IP --ethertype takes no"),
        (["--ethertype", "0x1ffff"], "--ethertype '0x1ffff'"),
        (
            [
                "--ethertype",
                "ipv6",
                "--protocol",
                "udp",
                "--src",
                "10.0.0.1",
                "--dst",
                "10.0.0.2",
                "--sport",
                "1",
                "--dport",
                "2",
            ],
            "does not fit --ethertype ipv6",
        ),
    ],
)
def test_bad_packets_get_one_line_errors(args: list[str], message: str) -> None:
    result = CliRunner().invoke(
        main, ["explain", *CREDS, "--port", "h/eth0", "--direction", "ingress", *args]
    )
    assert result.exit_code == 1, result.output
    assert result.output.startswith("error: ") and message in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_unreachable_server_is_one_line() -> None:
    result = CliRunner().invoke(
        main,
        ["explain", *CREDS, "--port", "h/eth0", "--direction", "egress", "--ethertype", "arp"],
    )
    assert result.exit_code == 1
    assert "cannot reach vxtap server at http://127.0.0.1:9" in result.output


@pytest.fixture
def seed(api_server: Any) -> dict[str, str]:
    """The seed's filter, rule and session on a real server; ports as an agent registers them."""
    with VxtapClient(
        api_server.endpoint, api_server.ak, api_server.sk, api_server.project_id
    ) as client:
        (source,) = client.register_ports(
            "ecs-source", [Interface(device="eth0", ipv4=("192.168.0.230",))]
        )
        target = client.create_port("ecs-target", "eth0", ipv4=["192.168.0.164"])
        flt = client.create_filter("seed")
        rule = client.create_rule(
            flt["id"], direction="ingress", priority=1, protocol="tcp",
            source_cidr_block="192.168.0.161/32", destination_cidr_block="192.168.0.230/32",
            destination_port_range="1234-1234",
        )  # fmt: skip
        session = client.create_session(
            "seed-session", filter_id=flt["id"], sources=[source.id], target_id=target.id,
            priority=1,
        )  # fmt: skip
    return {"source": source.id, "rule": rule["id"], "session": session["id"]}


def _explain(api_server: Any, *args: str) -> Any:
    creds = ["--endpoint", api_server.endpoint, "--ak", api_server.ak, "--sk", api_server.sk]
    creds += ["--project-id", api_server.project_id]
    return CliRunner().invoke(main, ["explain", *creds, *args])


SEED_PACKET = ["--protocol", "tcp", "--src", "192.168.0.161", "--dst", "192.168.0.230",
               "--sport", "38944", "--dport", "1234"]  # fmt: skip


def test_the_seed_packet_is_explained(api_server: Any, seed: dict[str, str]) -> None:
    result = _explain(
        api_server, "--port", "ecs-source/eth0", "--direction", "ingress", *SEED_PACKET
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == (
        f"TCP 192.168.0.161:38944 > 192.168.0.230:1234, ingress on ecs-source/eth0 "
        f"({seed['source']})"
    )
    assert lines[1].startswith("MIRRORED: mirrored by session seed-session (rule 1 accepts)")
    assert "vni 1" in lines[1]

    by_id = _explain(
        api_server, "--port", seed["source"], "--direction", "ingress", *SEED_PACKET, "--json"
    )
    assert by_id.exit_code == 0, by_id.output
    answer = json.loads(by_id.output)
    assert (answer["mirrored"], answer["session_id"], answer["rule_id"], answer["vni"]) == (
        True, seed["session"], seed["rule"], 1,
    )  # fmt: skip


def test_why_not_is_explained(api_server: Any, seed: dict[str, str]) -> None:
    other_port = [*SEED_PACKET[:-1], "22"]
    result = _explain(
        api_server, "--port", "ecs-source/eth0", "--direction", "ingress", *other_port
    )
    assert result.exit_code == 0, result.output
    assert "NOT MIRRORED: no session mirrors it (1 tried)" in result.output
    assert "no-match: none of 1 ingress rules matches" in result.output
    egress = _explain(
        api_server, "--port", "ecs-source/eth0", "--direction", "egress", *SEED_PACKET
    )
    assert "no-rules: filter has no egress rules" in egress.output


def test_a_non_first_fragment_is_explained(api_server: Any, seed: dict[str, str]) -> None:
    fragment = ["--protocol", "tcp", "--src", "192.168.0.161", "--dst", "192.168.0.230"]
    result = _explain(
        api_server, "--port", "ecs-source/eth0", "--direction", "ingress", *fragment, "--fragment"
    )
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0].startswith(
        "TCP 192.168.0.161 > 192.168.0.230 (non-first fragment), ingress"
    )
    assert "NOT MIRRORED" in result.output
    with_ports = _explain(
        api_server, "--port", "ecs-source/eth0", "--direction", "ingress", *SEED_PACKET,
        "--fragment",
    )  # fmt: skip
    assert with_ports.exit_code == 1
    assert with_ports.output == "error: a non-first fragment carries no ports\n"


def test_unknown_port_is_one_line(api_server: Any, seed: dict[str, str]) -> None:
    result = _explain(
        api_server, "--port", "ecs-source/eth9", "--direction", "ingress", *SEED_PACKET
    )
    assert result.exit_code == 1
    assert result.output == "error: port 'ecs-source/eth9' is not a port of host 'ecs-source'\n"


def test_explain_over_https_with_a_ca_bundle(
    tmp_path: Any, tls_files: Any, api_server_factory: Any
) -> None:
    server = api_server_factory(tmp_path / "tls-server", tls=tls_files)
    try:
        args = ["--port", "h/eth0", "--direction", "egress", "--ethertype", "arp"]
        trusted = _explain(server, "--cacert", str(tls_files.ca), *args)
        # Reached and trusted: the server answers that h has no port eth0.
        assert trusted.output == "error: port 'h/eth0' is not a port of host 'h'\n"
        untrusted = _explain(server, *args)
        assert untrusted.exit_code == 1
        assert "its certificate is not trusted" in untrusted.output
    finally:
        server.stop()


def _ipv4_tcp_frame(src: str, dst: str, sport: int, dport: int) -> bytes:
    """A real Ethernet/IPv4/TCP frame's first bytes, as the mirror program reads them."""
    ip = bytes([0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0])
    ip += ipaddress.ip_address(src).packed + ipaddress.ip_address(dst).packed
    tcp = sport.to_bytes(2, "big") + dport.to_bytes(2, "big") + bytes(16)
    return bytes(12) + b"\x08\x00" + ip + tcp


def test_the_member_of_a_target_group_is_named(api_server: Any) -> None:
    with VxtapClient(
        api_server.endpoint, api_server.ak, api_server.sk, api_server.project_id
    ) as client:
        (source,) = client.register_ports("elb-src", [Interface(device="eth0", ipv4=("10.7.0.1",))])
        collectors = [
            client.create_port("elb-col", f"eth{i}", ipv4=[f"10.7.1.{i}"]).id for i in range(3)
        ]
        group = client.create_target_group("ids", ports=collectors)
        flt = client.create_filter("all")
        for direction in ("ingress", "egress"):
            client.create_rule(flt["id"], direction=direction, priority=1, protocol="all")
        client.create_session(
            "to-ids", filter_id=flt["id"], sources=[source.id], target_id=group["id"],
            target_type="elb", priority=1,
        )  # fmt: skip
    engine = create_engine(api_server.db_url)

    def set_healthy(ports: list[str]) -> None:
        # What the health part writes; the heartbeat an hour ahead keeps the server's
        # checker (it marks members down 1.5 s after their last heartbeat) away meanwhile.
        heard = datetime.now(UTC).replace(tzinfo=None) + timedelta(hours=1)
        with engine.begin() as db:
            db.execute(
                update(MemberRow).values(healthy=MemberRow.port_id.in_(ports), last_heartbeat=heard)
            )

    forward = ["--protocol", "tcp", "--src", "10.7.0.9", "--dst", "10.7.0.1",
               "--sport", "40000", "--dport", "443"]  # fmt: skip
    reverse = ["--protocol", "tcp", "--src", "10.7.0.1", "--dst", "10.7.0.9",
               "--sport", "443", "--dport", "40000"]  # fmt: skip

    def member(direction: str, packet: list[str]) -> Any:
        result = _explain(api_server, "--port", "elb-src/eth0", "--direction", direction,
                          *packet, "--json")  # fmt: skip
        assert result.exit_code == 0, result.output
        return json.loads(result.output)["target_group"]

    try:
        assert member("ingress", forward)["member"] is None  # none heard from yet
        set_healthy(collectors)
        chosen = member("ingress", forward)
        assert chosen["group_id"] == group["id"] and chosen["member"] in collectors
        # Both directions of the flow go to the same member; the pure core agrees on
        # the real frame's bytes.
        assert member("egress", reverse) == chosen
        frame = _ipv4_tcp_frame("10.7.0.9", "10.7.0.1", 40000, 443)
        expected = placement(build_table(collectors), flow_hash(flow_key(frame)))
        assert chosen["member"] == expected
        # The member out of health: the flow moves to one of the others.
        set_healthy([c for c in collectors if c != chosen["member"]])
        moved = member("ingress", forward)
        assert moved["member"] in collectors and moved["member"] != chosen["member"]
        text = _explain(api_server, "--port", "elb-src/eth0", "--direction", "ingress", *forward)
        assert f"to target group {group['id']}, member {moved['member']}" in text.output
    finally:
        engine.dispose()
