"""`vxtap explain`: packet options, and the verdict against a real server's desired state."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from vxtap.cli import main

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
