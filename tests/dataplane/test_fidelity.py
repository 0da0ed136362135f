"""Fidelity of the mirror of a real TCP transfer with TSO (docs/dataplane.md, "One
mirrored packet per wire packet"): a known byte stream (byte k = k mod 251) crosses the
real data plane as super-packets, and the mirrors reaching the target must be exactly one
truncated copy per wire segment, each carrying its own segment's first bytes."""

from __future__ import annotations

import json
import signal
import struct
import subprocess
import sys

import pytest

from support.dataplane_lan import (
    SOURCE_IP,
    SOURCE_IP6,
    TARGET6_PORT,
    TARGET_IP,
    TARGET_IP6,
    TARGET_PORT,
    TEST_IP,
    TEST_IP6,
    Lan,
    Mirror,
    ip_checksum_ok,
    rule,
    session,
    state,
    stop,
)
from vxtap.dataplane.plan import compile_plan
from vxtap.model import Direction, EtherType, Filter, Protocol

pytestmark = pytest.mark.netns

STREAM_BYTES = 3_000_000  # ~2,100 wire segments per family: a few seconds on a loaded host
PORT = 7001
SNAP = 96

# Receives one connection per family and checks every byte of the pattern.
_RECEIVER = """
import socket, sys
expected = (bytes(range(251)) * (int(sys.argv[3]) // 251 + 1))[: int(sys.argv[3])]
listeners = []
for family, address in ((socket.AF_INET, sys.argv[1]), (socket.AF_INET6, sys.argv[2])):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((address, {PORT}))
    s.listen(1)
    listeners.append(s)
print("ready", flush=True)
for s in listeners:
    c, _ = s.accept()
    got = bytearray()
    while True:
        chunk = c.recv(1 << 20)
        if not chunk:
            break
        got += chunk
    c.close()
    print("intact" if got == expected else f"damaged {len(got)}", flush=True)
""".replace("{PORT}", str(PORT))

# Sends the pattern in large writes, so the stack hands the device TSO super-packets.
_SENDER = """
import socket, sys
n = int(sys.argv[2])
data = (bytes(range(251)) * (n // 251 + 1))[:n]
c = socket.create_connection((sys.argv[1], {PORT}))
view = memoryview(data)
for offset in range(0, n, 1 << 18):
    c.sendall(view[offset : offset + (1 << 18)])
c.shutdown(socket.SHUT_WR)
c.recv(1)
c.close()
""".replace("{PORT}", str(PORT))


def retransmitted_segments(lan: Lan) -> int:
    """TcpRetransSegs of the sender's namespace (/proc/net is per namespace)."""
    lines = [
        line.split()
        for line in lan.test.run(["cat", "/proc/net/snmp"]).stdout.splitlines()
        if line.startswith("Tcp:")
    ]
    return int(lines[1][lines[0].index("RetransSegs")])


def tx_packets(lan: Lan, device: str) -> int:
    out = lan.source.run(["ip", "-j", "-s", "link", "show", "dev", device]).stdout
    return int(json.loads(out)[0]["stats64"]["tx"]["packets"])


def tcp_header(m: Mirror) -> tuple[int, int, int]:
    """(sequence number, offset of the payload in the inner frame, TCP flags)."""
    l3 = (m.inner[14] & 0xF) * 4 if m.ethertype == 0x0800 else 40
    tcp = m.inner[14 + l3 :]
    seq = struct.unpack_from("!I", tcp, 4)[0]
    return seq, 14 + l3 + (tcp[12] >> 4) * 4, tcp[13]


def pattern(offset: int, length: int) -> bytes:
    return bytes((offset + k) % 251 for k in range(length))


# A production mark set before vxtap's chain (ingress -500) sends the copies the
# priority way: vxtap-pr0, its program at tc egress, vxtap-pr1.
PRODUCTION_MARK = """
table netdev production {
  chain in { type filter hook ingress device "eth0" priority -600; policy accept;
    meta mark set 0x77
  }
}
"""


@pytest.mark.parametrize(
    ("underlay", "carrier"), [(4, "mark"), (6, "mark"), (4, "priority"), (6, "priority")]
)
def test_tso_stream_is_mirrored_once_per_wire_segment_with_its_own_bytes(
    lan: Lan, underlay: int, carrier: str
) -> None:
    for ns in (lan.test, lan.source):
        ns.run(["ethtool", "-K", "eth0", "tso", "on", "gso", "on"])  # super-packets
    if carrier == "priority":
        lan.source.run(["nft", "-f", "-"], input=PRODUCTION_MARK)
    rules = []
    for family, here in ((EtherType.IPV4, SOURCE_IP), (EtherType.IPV6, SOURCE_IP6)):
        bits = 32 if family is EtherType.IPV4 else 128
        for direction, side in (("src", "dports"), ("dst", "sports")):
            kwargs = {side: f"{PORT}-{PORT}"}
            if direction == "src":
                kwargs["dst"] = f"{here}/{bits}"
                d = Direction.INGRESS
            else:
                kwargs["src"] = f"{here}/{bits}"
                d = Direction.EGRESS
            rules.append(
                rule(
                    f"{family.value}-{direction}",
                    len(rules) + 1,
                    direction=d,
                    ethertype=family,
                    protocol=Protocol.TCP,
                    **kwargs,
                )
            )
    target = TARGET_PORT if underlay == 4 else TARGET6_PORT
    target_ip = TARGET_IP if underlay == 4 else TARGET_IP6
    one = Filter(id="f", name="f", rules=tuple(rules))
    lan.dataplane.apply(
        compile_plan(state([one], [session("s", "f", 1, vni=9, packet_length=SNAP, target=target)]))
    )
    receiver = lan.source.popen(
        [sys.executable, "-c", _RECEIVER, SOURCE_IP, SOURCE_IP6, str(STREAM_BYTES)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
    )
    try:
        assert receiver.stdout is not None and receiver.stdout.readline() == b"ready\n"
        retrans_before = retransmitted_segments(lan)
        with lan.capture() as mirrors:
            for address in (SOURCE_IP, SOURCE_IP6):
                lan.test.run([sys.executable, "-c", _SENDER, address, str(STREAM_BYTES)])
        retransmitted = retransmitted_segments(lan) - retrans_before
        verdicts = [receiver.stdout.readline().strip() for _ in range(2)]
    finally:
        stop(receiver, signal.SIGKILL)
    assert verdicts == [b"intact", b"intact"]  # production untouched
    crossed = {device: tx_packets(lan, device) for device in ("vxtap-mk0", "vxtap-pr0")}
    # IPv4 targets: the program encapsulates where the data plane says so, else the device.
    through_device = tx_packets(lan, "vxtap-vx0")
    if lan.dataplane.encapsulation == "program" and underlay == 4:
        assert through_device == 0
    else:
        assert through_device >= 4000
    # The data (inbound, ~2,100 segments per family) took the carrier's copy device; the
    # server's ACKs leave unmarked, so they take the mark's way in both cases.
    if carrier == "mark":
        assert crossed["vxtap-mk0"] >= 4000 and crossed["vxtap-pr0"] == 0, crossed
    else:
        assert crossed["vxtap-pr0"] >= 4000, crossed
    counted = lan.target_vxlan_count()
    assert counted == len(mirrors)  # tcpdump saw every mirror the target received

    # Every mirror: the target's VXLAN, cut to the snap length, never fragmented, outer
    # and inner IPv4 header checksums right.
    for m in mirrors:
        assert (m.outer_version, m.outer_dst, m.vni, m.vxlan_flags) == (underlay, target_ip, 9, 8)
        assert not m.outer_fragment
        assert m.outer_checksum_ok is (True if underlay == 4 else None), m
        assert m.inner_length == min(SNAP, 14 + (m.ip_length or 0)), m
        if m.ethertype == 0x0800:
            ihl = (m.inner[14] & 0xF) * 4
            assert ip_checksum_ok(m.inner[14 : 14 + ihl]), m
    assert {m.ethertype for m in mirrors} == {0x0800, 0x86DD}

    for client, server in ((TEST_IP, SOURCE_IP), (TEST_IP6, SOURCE_IP6)):
        flow = [m for m in mirrors if {m.src, m.dst} == {client, server}]
        # Both directions of the flow leave with one outer source port.
        assert {m.src for m in flow} == {client, server}
        assert len({m.outer_sport for m in flow}) == 1, sorted({m.outer_sport for m in flow})
        data = [m for m in flow if m.src == client]
        syn = [m for m in data if tcp_header(m)[2] & 0x02]
        assert len(syn) == 1, len(syn)
        first = (tcp_header(syn[0])[0] + 1) & 0xFFFFFFFF
        ranges: list[tuple[int, int]] = []
        for m in data:
            assert m.tcp_payload is not None
            if m.tcp_payload == 0:
                continue
            seq, payload_at, _ = tcp_header(m)
            offset = (seq - first) & 0xFFFFFFFF
            carried = m.inner[payload_at:]
            # Its own segment's first bytes (a mirror of a super-packet, or of another
            # segment, would carry other bytes).
            assert carried == pattern(offset, len(carried)), (offset, m)
            assert m.ip_length is not None and m.ip_length <= 1500  # one wire segment
            ranges.append((offset, offset + m.tcp_payload))
        ranges.sort()
        covered, overlaps = 0, 0
        for start, end in ranges:
            assert start <= covered, f"hole [{covered}, {start}) in the mirrored stream"
            overlaps += start < covered
            covered = max(covered, end)
        assert covered == STREAM_BYTES
        # Overlaps only where the sender sent a segment again (counted in both flows).
        assert overlaps <= retransmitted, (overlaps, retransmitted)
        # (Tiling with no overlap is one mirror per wire segment: segments are not all MSS
        # long, the last of each super-packet is shorter, so a count would not say it.)
