"""The pure core: classify, decode, one-line and JSON rendering."""

from __future__ import annotations

import json
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from vxtap.collector.decode import NO_VNI, Kind, classify, decode, render_line, to_json
from vxtap.testing import frames as f

# The seed's packet: ECS-test -> ECS-source TCP "12345\n", mirrored from 192.168.0.230 to .164.
SEED_TCP = f.ethernet(
    f.ipv4(
        f.tcp(
            b"12345\n",
            sport=38944,
            dport=1234,
            seq=2063075043,
            ack=1116663338,
            flags=0x18,
            window=502,
            options=b"\x01\x01\x08\x0a"
            + (969673134).to_bytes(4, "big")
            + (605179348).to_bytes(4, "big"),
        ),
        src="192.168.0.161",
        dst="192.168.0.230",
        protocol=6,
    ),
    src="fa:16:3e:7e:d6:77",
    dst="fa:16:3e:7e:d6:bc",
    ethertype=0x0800,
)
SEED = f.datagram(SEED_TCP, vni=1, src="192.168.0.230", dst="192.168.0.164", sport=32838)
T = 1_700_000_000_123_456_789


def line(datagram: bytes) -> str:
    return render_line(decode(datagram, T))


def test_seed_packet_reads_like_tcpdump() -> None:
    text = line(SEED)
    # The seed's tcpdump line, minus the outer MACs (not part of the IP datagram).
    assert re.fullmatch(r"\d\d:\d\d:\d\d\.123456 .*", text)
    assert (
        "192.168.0.230.32838 > 192.168.0.164.4789: VXLAN, flags [I] (0x08), vni 1: "
        "fa:16:3e:7e:d6:77 > fa:16:3e:7e:d6:bc, ethertype IPv4 (0x0800), length 72: "
        "192.168.0.161.38944 > 192.168.0.230.1234: Flags [P.], seq 2063075043:2063075049, "
        "ack 1116663338, win 502, options [nop,nop,TS val 969673134 ecr 605179348], length 6"
    ) in text
    assert "truncated" not in text


def test_classify_fast_path_agrees_with_decode() -> None:
    kind, vni, src, inner, end, orig, reason = classify(SEED, 0, len(SEED))
    assert (kind, vni, src, orig, reason) == (Kind.OK, 1, bytes([192, 168, 0, 230]), 72, None)
    assert SEED[inner:end] == SEED_TCP
    # At an offset inside a bigger buffer (the ring), with trailing Ethernet padding.
    buf = b"x" * 100 + SEED + b"\0" * 10
    assert classify(buf, 100, len(SEED) + 10)[3:6] == (inner, end, orig)


def test_truncated_copy_keeps_its_original_length() -> None:
    ping = f.ethernet(
        f.ipv4(
            f.icmp_echo(b"p" * 1000, ident=7, seq=3), src="10.0.0.1", dst="10.0.0.2", protocol=1
        ),
        src="02:00:00:00:00:01",
        dst="02:00:00:00:00:02",
        ethertype=0x0800,
    )
    assert len(ping) == 1042
    d = f.datagram(f.cut(ping, 96), vni=5, src="10.1.0.1", dst="10.1.0.2")
    kind, vni, _src, inner, end, orig, _ = classify(d, 0, len(d))
    assert (kind, vni, end - inner, orig) == (Kind.TRUNCATED, 5, 96, 1042)
    p = decode(d, T)
    assert p.truncated and p.captured == 96 and p.length == 1042
    text = render_line(p)
    assert "length 1042: 10.0.0.1 > 10.0.0.2: ICMP echo request, id 7, seq 3, length 1008" in text
    assert text.endswith("[truncated copy: 96 of 1042 bytes]")
    assert to_json(p)["truncated"] is True


def test_copy_cut_inside_tcp_header_is_marked() -> None:
    d = f.datagram(f.cut(SEED_TCP, 40), vni=1, src="10.1.0.1", dst="10.1.0.2")
    text = line(d)
    assert "192.168.0.161.38944 > 192.168.0.230.1234:  [|tcp]" in text  # as tcpdump has it
    d = f.datagram(f.cut(SEED_TCP, 36), vni=1, src="10.1.0.1", dst="10.1.0.2")
    assert "192.168.0.161 > 192.168.0.230: [|tcp]" in line(d)
    assert "[truncated copy: 40 of 72 bytes]" in text


def test_ipv6_outer_and_inner() -> None:
    inner = f.ethernet(
        f.ipv6(
            f.tcp(
                sport=40000, dport=443, seq=1, flags=0x02, window=64800, options=b"\x02\x04\x05\xa0"
            ),
            src="2001:db8::1",
            dst="2001:db8::2",
            next_header=6,
        ),
        src="02:00:00:00:00:01",
        dst="02:00:00:00:00:02",
        ethertype=0x86DD,
    )
    d = f.datagram(inner, vni=16777215, src="fd00::1", dst="fd00::2", sport=5555)
    text = line(d)
    assert "fd00::1.5555 > fd00::2.4789: VXLAN, flags [I] (0x08), vni 16777215: " in text
    assert "ethertype IPv6 (0x86dd), length 78: 2001:db8::1.40000 > 2001:db8::2.443: " in text
    assert "Flags [S], seq 1, win 64800, options [mss 1440], length 0" in text
    obj = to_json(decode(d, T))
    assert obj["outer"] == {"src": "fd00::1", "dst": "fd00::2", "sport": 5555, "dport": 4789}
    assert obj["ip"]["version"] == 6 and obj["tcp"]["flags"] == "S"


def test_icmpv6_udp_vlan_arp() -> None:
    echo6 = f.ethernet(
        f.ipv6(
            f.icmp_echo(b"x" * 8, ident=1, seq=2, version=6),
            src="fe80::1",
            dst="fe80::2",
            next_header=58,
        ),
        src="02:00:00:00:00:01",
        dst="02:00:00:00:00:02",
        ethertype=0x86DD,
    )
    assert "fe80::1 > fe80::2: ICMP6, echo request, id 1, seq 2, length 16" in line(
        f.datagram(echo6, vni=2, src="10.0.0.1", dst="10.0.0.2")
    )
    dns = f.ethernet(
        f.ipv4(f.udp(b"q" * 12, sport=5353, dport=53), src="10.0.0.1", dst="10.0.0.2", protocol=17),
        src="02:00:00:00:00:01",
        dst="02:00:00:00:00:02",
        ethertype=0x0800,
        vlan=100,
    )
    text = line(f.datagram(dns, vni=2, src="10.0.0.1", dst="10.0.0.2"))
    assert (
        "vlan 100, ethertype IPv4 (0x0800), length 58: 10.0.0.1.5353 > 10.0.0.2.53: UDP, length 12"
        in text
    )
    arp = f.ethernet(
        bytes.fromhex("0001080006040001")
        + f.mac("02:00:00:00:00:01")
        + bytes([10, 0, 0, 1])
        + bytes(6)
        + bytes([10, 0, 0, 2]),
        src="02:00:00:00:00:01",
        dst="ff:ff:ff:ff:ff:ff",
        ethertype=0x0806,
    )
    assert "ARP, Request who-has 10.0.0.2 tell 10.0.0.1, length 28" in line(
        f.datagram(arp, vni=2, src="10.0.0.1", dst="10.0.0.2")
    )


def test_ethernet_padding_is_part_of_the_frame() -> None:
    small = f.ethernet(
        f.ipv4(f.tcp(sport=1, dport=2, flags=0x10), src="10.0.0.1", dst="10.0.0.2", protocol=6),
        src="02:00:00:00:00:01",
        dst="02:00:00:00:00:02",
        ethertype=0x0800,
    )
    padded = small + bytes(60 - len(small))
    d = f.datagram(padded, vni=3, src="10.0.0.1", dst="10.0.0.2")
    kind, _vni, _src, inner, end, orig, _ = classify(d, 0, len(d))
    assert (kind, end - inner, orig) == (Kind.OK, 60, 60)


def malformed(d: bytes) -> tuple[Kind, int, str]:
    kind, vni, _src, _inner, _end, _orig, reason = classify(d, 0, len(d))
    assert reason is not None
    p = decode(d, T)
    assert p.problem == reason
    assert reason in render_line(p)
    assert to_json(p)["malformed"] == reason
    return kind, vni, reason


def test_bad_input_is_classified_and_named() -> None:
    a, b = "10.0.0.1", "10.0.0.2"
    kind, vni, reason = malformed(f.outer(b"\x08\0\0\0", src=a, dst=b))
    assert (kind, vni) == (Kind.MALFORMED, NO_VNI) and "no VXLAN header: UDP payload of 4" in reason
    kind, vni, reason = malformed(f.datagram(SEED_TCP, vni=1, flags=0x00, src=a, dst=b))
    assert (kind, vni) == (Kind.MALFORMED, NO_VNI) and "VXLAN flags 0x00, expected 0x08" in reason
    dns_query = (
        bytes.fromhex("abcd01000001000000000000") + b"\x07example\x03com\x00\x00\x01\x00\x01"
    )
    kind, _, reason = malformed(f.outer(dns_query, src=a, dst=b))
    assert kind is Kind.MALFORMED and "VXLAN flags 0xab" in reason
    kind, vni, reason = malformed(f.datagram(b"\x02\0\0\0\0\x01", vni=9, src=a, dst=b))
    assert (kind, vni) == (Kind.MALFORMED, 9) and "inner frame of 6 bytes is shorter" in reason
    cut_ip = f.ethernet(
        b"\x45\x00", src="02:00:00:00:00:01", dst="02:00:00:00:00:02", ethertype=0x0800
    )
    kind, vni, reason = malformed(f.datagram(cut_ip, vni=9, src=a, dst=b))
    assert (kind, vni, reason) == (Kind.BAD_INNER, 9, "inner IPv4 header cut")
    not_v4 = f.ethernet(
        b"\x65" + bytes(30), src="02:00:00:00:00:01", dst="02:00:00:00:00:02", ethertype=0x0800
    )
    kind, _, reason = malformed(f.datagram(not_v4, vni=9, src=a, dst=b))
    assert (kind, reason) == (Kind.BAD_INNER, "inner IPv4 header has version 6")
    fragment = bytearray(SEED)
    fragment[6] |= 0x20  # more fragments
    kind, _, reason = malformed(bytes(fragment))
    assert (kind, reason) == (Kind.MALFORMED, "outer IPv4 datagram is fragmented")
    kind, _, reason = malformed(SEED[:60])
    assert (kind, reason) == (Kind.MALFORMED, f"outer datagram cut: 60 of {len(SEED)} bytes")


def test_json_is_one_plain_object() -> None:
    obj = to_json(decode(SEED, T))
    assert json.loads(json.dumps(obj)) == obj
    assert obj["time"] == "2023-11-14T22:13:20.123456789Z"
    assert obj["vni"] == 1 and obj["flags"] == 8 and obj["length"] == 72 and obj["captured"] == 72
    assert obj["eth"] == {
        "src": "fa:16:3e:7e:d6:77",
        "dst": "fa:16:3e:7e:d6:bc",
        "ethertype": "0x0800",
        "vlan": None,
    }
    assert obj["tcp"]["seq"] == 2063075043 and obj["tcp"]["payload_length"] == 6
    assert obj["malformed"] is None and obj["truncated"] is False


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.integers(min_value=0, max_value=200))
def test_no_input_makes_it_raise(tail: bytes, keep: int) -> None:
    # Random bytes, and real datagrams cut anywhere with random bytes after.
    for d in (tail, SEED[:keep] + tail, b"\x45" + tail, b"\x60" + tail):
        if not d:
            continue
        classify(d, 0, len(d))
        render_line(decode(d, T))
        json.dumps(to_json(decode(d, T)))
