"""What reaches the target, byte for byte: the MTU cap, fragments, port 0, exact cuts,
and the outer source port of both directions of a flow (docs/dataplane.md)."""

from __future__ import annotations

import ipaddress
import struct
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Sequence

import pytest

from support.dataplane_lan import (
    ECHO_PORT,
    SOURCE_IP,
    SOURCE_IP6,
    TARGET6_PORT,
    TARGET_IP,
    TARGET_IP6,
    TEST_IP,
    TEST_IP6,
    Lan,
    Mirror,
    echo_server,
    rule,
    session,
    state,
)
from vxtap.dataplane.plan import compile_plan
from vxtap.evaluate import Packet, explain
from vxtap.model import Action, Direction, EtherType, Filter, Protocol
from vxtap.netns import Namespace

pytestmark = pytest.mark.netns

UDP, TCP = Protocol.UDP, Protocol.TCP
V6 = EtherType.IPV6

# Writes each line's hex frames to the named device (AF_PACKET: exactly these bytes).
_RAW_SENDER = """
import socket, sys
for line in sys.stdin:
    device, *frames = line.split()
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((device, 0))
    for frame in frames:
        s.send(bytes.fromhex(frame))
    s.close()
"""


def send_frames(ns: Namespace, device: str, frames: Sequence[bytes]) -> None:
    text = f"{device} {' '.join(f.hex() for f in frames)}\n"
    ns.run([sys.executable, "-c", _RAW_SENDER], input=text)


def _checksum(data: bytes) -> int:
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def tagged_mac(tag: int) -> bytes:
    """A locally administered source MAC carrying a tag (it survives any cut >= 12)."""
    return b"\x02\xaa" + tag.to_bytes(4, "big")


NOBODY = bytes.fromhex("02ffffffff01")


def ipv4(
    tag: int, protocol: int, body: bytes, *, frag: int = 0, src: str = TEST_IP, dst: str = SOURCE_IP
) -> bytes:
    """An Ethernet + IPv4 frame; `frag` is the flags/offset field (0x2000 = MF)."""
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), tag & 0xFFFF, frag, 64, protocol, 0,
        ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed,
    )  # fmt: skip
    header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
    return NOBODY + tagged_mac(tag) + b"\x08\x00" + header + body


def ipv6(
    tag: int, next_header: int, body: bytes, *, src: str = TEST_IP6, dst: str = SOURCE_IP6
) -> bytes:
    header = struct.pack(
        "!IHBB16s16s", 0x6 << 28, len(body), next_header, 64,
        ipaddress.IPv6Address(src).packed, ipaddress.IPv6Address(dst).packed,
    )  # fmt: skip
    return NOBODY + tagged_mac(tag) + b"\x86\xdd" + header + body


def udp(sport: int, dport: int, payload: bytes) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def fragment6(next_header: int, offset: int, more: bool) -> bytes:
    """An IPv6 fragment header (offset in 8-byte units)."""
    return struct.pack("!BBHI", next_header, 0, offset << 3 | more, 0x1234)


def by_tag(mirrors: Sequence[Mirror]) -> dict[int, list[Mirror]]:
    found: dict[int, list[Mirror]] = defaultdict(list)
    for m in mirrors:
        if len(m.inner) >= 12 and m.inner[6:8] == b"\x02\xaa":
            found[int.from_bytes(m.inner[8:12], "big")].append(m)
    return found


# --- 1. the cap is exactly what fits the underlay MTU -------------------------------------


@pytest.mark.parametrize("mtu", [1500, 1400])
def test_the_cap_is_exactly_what_fits_the_underlay_mtu(lan: Lan, mtu: int) -> None:
    """Inner frame <= MTU - 36 over an IPv4 underlay, MTU - 56 over IPv6, with the MTU
    of the route to the target (here set on the route: the device stays at 1500)."""
    for family, target in (("-4", f"{TARGET_IP}/32"), ("-6", f"{TARGET_IP6}/128")):
        route = ["ip", family, "route", "replace", target, "dev", "eth0", "mtu", str(mtu)]
        lan.source.run(route)
    filters = [
        Filter(
            id="f4",
            name="f4",
            rules=(rule("r4", 1, protocol=UDP, dports="9004-9004", filter_id="f4"),),
        ),
        Filter(
            id="f6",
            name="f6",
            rules=(rule("r6", 1, protocol=UDP, dports="9006-9006", filter_id="f6"),),
        ),
    ]
    sessions = [
        session("s4", "f4", 1, vni=4, packet_length=1460),
        session("s6", "f6", 2, vni=6, packet_length=1460, target=TARGET6_PORT),
    ]
    lan.dataplane.apply(compile_plan(state(filters, sessions)))
    caps = {4: mtu - 36, 6: mtu - 56}
    sizes = {f: sorted({cap - 1, cap, cap + 1, 1463, 1464, 1465, 1514}) for f, cap in caps.items()}
    frames: list[bytes] = []
    expected: dict[int, int] = {}
    for family, dport in ((4, 9004), (6, 9006)):
        for size in sizes[family]:
            tag = family * 10_000 + size
            frames.append(ipv4(tag, 17, udp(5000, dport, bytes(size - 42))))
            expected[tag] = min(size, 1460, caps[family])
    with lan.capture() as mirrors:
        send_frames(lan.test, "eth0", frames)
    got = {
        tag: [(m.inner_length, m.outer_fragment) for m in ms] for tag, ms in by_tag(mirrors).items()
    }
    assert got == {tag: [(length, False)] for tag, length in expected.items()}
    # Each copy carries the frame's own first bytes.
    sent = {int.from_bytes(f[8:12], "big"): f for f in frames}
    for tag, ms in by_tag(mirrors).items():
        assert ms[0].inner == sent[tag][: expected[tag]]
    # A changed MTU is drift: the next apply clamps to it.
    plan = compile_plan(state(filters, sessions))
    assert lan.dataplane.drift(plan) == []
    lan.source.run(["ip", "route", "change", f"{TARGET_IP}/32", "dev", "eth0", "mtu", "1300"])
    assert lan.dataplane.drift(plan) == ["1 tunnel map entries are missing or differ"]
    lan.dataplane.apply(plan)
    assert lan.dataplane.drift(plan) == []
    with lan.capture() as mirrors:
        send_frames(lan.test, "eth0", frames[:1])
    assert [m.inner_length for m in mirrors] == [min(len(frames[0]), 1300 - 36)]


# --- 2./3. fragments and port 0 --------------------------------------------------------


def test_non_first_fragments_and_port_0_never_match_port_ranges(lan: Lan) -> None:
    """First fragments carry ports and match as usual; later fragments match only rules
    without ports, whatever their data looks like; port 0 is outside 1-65535. The kernel
    and `vxtap explain`'s evaluator agree on every frame."""
    ported = Filter(
        id="fp",
        name="fp",
        rules=(
            rule("v4-d80", 1, protocol=UDP, dports="80-80", filter_id="fp"),
            rule("v6-s1", 2, ethertype=V6, protocol=UDP, sports="1-30000", filter_id="fp"),
            rule("v6-d80", 3, ethertype=V6, protocol=UDP, dports="80-80", filter_id="fp"),
            rule("v4-any", 4, protocol=UDP, dports="1-65535", filter_id="fp"),
        ),
    )
    portless = Filter(
        id="fa",
        name="fa",
        rules=(
            rule("all4", 1, protocol=UDP, filter_id="fa"),
            rule("all6", 2, ethertype=V6, protocol=UDP, filter_id="fa"),
        ),
    )
    # A reject rule with 1-65535 must not catch port 0 either.
    rejecting = Filter(
        id="fr",
        name="fr",
        rules=(
            rule("rej", 1, protocol=TCP, dports="1-65535", action=Action.REJECT, filter_id="fr"),
            rule("tcp", 2, protocol=TCP, filter_id="fr"),
        ),
    )
    st = state(
        [ported, portless, rejecting],
        [
            session("ports", "fp", 1, vni=10, packet_length=1460),
            session("noports", "fa", 2, vni=20, packet_length=1460),
            session("reject", "fr", 3, vni=30, packet_length=1460),
        ],
    )
    lan.dataplane.apply(compile_plan(st))
    looks_like = {80: udp(1, 80, bytes(16)), 81: udp(1, 81, bytes(16))}
    cases: list[tuple[bytes, Packet]] = []

    def v4_packet(sport: int | None, dport: int | None, later: bool, protocol: int = 17) -> Packet:
        return Packet.ip(protocol, TEST_IP, SOURCE_IP, sport, dport, non_first_fragment=later)

    tag = 1
    for port, data in looks_like.items():
        # IPv4: unfragmented, first fragment (MF, offset 0), middle and last fragments.
        cases.append((ipv4(tag, 17, data), v4_packet(1, port, False)))
        cases.append((ipv4(tag + 1, 17, data, frag=0x2000), v4_packet(1, port, False)))
        cases.append((ipv4(tag + 2, 17, data, frag=0x2000 | 3), v4_packet(None, None, True)))
        cases.append((ipv4(tag + 3, 17, data, frag=3), v4_packet(None, None, True)))
        # IPv6: first fragment, later fragments (offset 3), and no fragment header.
        for offset, more in ((0, True), (3, True), (3, False)):
            frame = ipv6(tag + 4 + offset + more, 44, fragment6(17, offset, more) + data)
            packet = Packet.ip(
                17, TEST_IP6, SOURCE_IP6,
                *((1, port) if offset == 0 else (None, None)),
                non_first_fragment=offset != 0,
            )  # fmt: skip
            cases.append((frame, packet))
        cases.append((ipv6(tag + 9, 17, data), Packet.ip(17, TEST_IP6, SOURCE_IP6, 1, port)))
        tag += 10
    # Port 0: outside 1-65535 (UDP source and destination, TCP destination).
    cases.append((ipv4(100, 17, udp(0, 0, bytes(8))), v4_packet(0, 0, False)))
    cases.append((ipv6(101, 17, udp(0, 80, bytes(8))), Packet.ip(17, TEST_IP6, SOURCE_IP6, 0, 80)))
    tcp0 = struct.pack("!HHIIBBHHH", 1234, 0, 0, 0, 0x50, 0x02, 512, 0, 0)
    cases.append((ipv4(102, 6, tcp0), v4_packet(1234, 0, False, protocol=6)))
    tcp1 = struct.pack("!HHIIBBHHH", 1234, 1, 0, 0, 0x50, 0x02, 512, 0, 0)
    cases.append((ipv4(103, 6, tcp1), v4_packet(1234, 1, False, protocol=6)))
    with lan.capture() as mirrors:
        send_frames(lan.test, "eth0", [frame for frame, _ in cases])
    seen = by_tag(mirrors)
    vni_of = {"ports": 10, "noports": 20, "reject": 30}
    problems = []
    for frame, packet in cases:
        tag = int.from_bytes(frame[8:12], "big")
        verdict = explain(st, "port-source", Direction.INGRESS, packet)
        want = [] if verdict.session_id is None else [vni_of[verdict.session_id]]
        got = [m.vni for m in seen.get(tag, [])]
        if got != want:
            problems.append(
                f"tag {tag} {packet}: kernel {got}, evaluator {want} ({verdict.reason})"
            )
    assert not problems, "\n".join(problems)
    # What the evaluator says, spelled out: later fragments never match a rule with ports.
    later = v4_packet(None, None, True)
    assert explain(st, "port-source", Direction.INGRESS, later).session_id == "noports"
    zero = v4_packet(1, 0, False)
    assert explain(st, "port-source", Direction.INGRESS, zero).session_id == "noports"
    syn0 = v4_packet(1234, 0, False, protocol=6)
    assert explain(st, "port-source", Direction.INGRESS, syn0).session_id == "reject"


# --- 4. never longer than packet_length, and cut exactly ----------------------------------


def tcp(sport: int, dport: int, payload: bytes) -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 0x50, 0x18, 512, 0, 0) + payload


def extension(next_header: int) -> bytes:
    """An 8-byte IPv6 options header (hop-by-hop or destination options): PadN."""
    return struct.pack("!BB", next_header, 0) + b"\x01\x04" + bytes(4)


def cut_frames(tag: int) -> tuple[list[bytes], list[bytes]]:
    """(ingress frames, egress frames) whose headers reach far: GRE carrying Ethernet (a
    packet socket's frame gets its transport header from the flow dissector, inside the
    GRE payload), IPv6 behind extension headers, and plain TCP, UDP and ICMP."""
    inner = NOBODY + tagged_mac(0) + b"\x08\x00"
    inner_ip = ipv4(0, 6, tcp(1000, 2000, bytes(40)), src="10.9.0.1", dst="10.9.0.2")[14:]
    gre_teb = struct.pack("!HH", 0, 0x6558) + inner + inner_ip
    gre_ip = struct.pack("!HH", 0, 0x0800) + inner_ip
    ext = extension(60) + extension(6)  # hop-by-hop, destination options, then TCP
    ingress = [
        ipv6(tag, 0, ext + tcp(1000, 2000, bytes(30))),
        ipv6(tag + 1, 0, extension(17) + udp(1000, 2000, bytes(30))),
        ipv4(tag + 2, 6, tcp(1000, 2000, bytes(30))),
        ipv4(tag + 3, 17, udp(1000, 2000, bytes(30))),
        ipv4(tag + 4, 1, struct.pack("!BBHHH", 8, 0, 0, 1, 1) + bytes(40)),
        ipv4(tag + 5, 47, gre_teb),
    ]
    egress = [
        ipv4(tag + 6, 47, gre_teb, src=SOURCE_IP, dst=TEST_IP),
        ipv4(tag + 7, 47, gre_ip, src=SOURCE_IP, dst=TEST_IP),
        ipv6(tag + 8, 0, ext + tcp(1000, 2000, bytes(30)), src=SOURCE_IP6, dst=TEST_IP6),
        ipv4(tag + 9, 6, tcp(1000, 2000, bytes(60)), src=SOURCE_IP, dst=TEST_IP),
    ]
    return ingress, egress


CUT_LENGTHS = (1, 13, 14, 20, 33, 34, 35, 41, 53, 54, 55, 60, 63, 66, 70, 75, 89, 96, 130)
# TCP from a socket is CHECKSUM_PARTIAL: the kernel alone cuts it no shorter than 52.
SOCKET_LENGTHS = (34, 41, 60)


def shortest_sent(frame: bytes) -> int:
    """The VXLAN device (Linux 6.10+) drops an inner frame without its whole base IP
    header; IPv6 copies of 34-53 bytes leave marked IPv4 (metadata only), so Ethernet +
    20 is the shortest copy that can leave, for both."""
    return 14 + 20


def test_copies_are_cut_exactly_to_packet_length_or_counted(lan: Lan) -> None:
    """Every copy is exactly min(frame, packet_length) long and carries the frame's first
    bytes, also where the kernel alone refuses to cut (inside headers, GRE from a packet
    socket, IPv6 extension headers, TCP with a checksum left to offload). Shorter than
    34 bytes (Ethernet + IPv4 header) nothing is sent: the session's `uncut` counter
    counts it."""
    everything = Filter(
        id="f",
        name="f",
        rules=(
            # Only the test's addresses: the hosts' own IPv6 neighbour discovery stays out.
            rule("in4", 1, dst=f"{SOURCE_IP}/32"),
            rule("in6", 2, ethertype=V6, dst=f"{SOURCE_IP6}/128"),
            rule("out4", 1, direction=Direction.EGRESS, dst=f"{TEST_IP}/32"),
            rule("out6", 2, direction=Direction.EGRESS, ethertype=V6, dst=f"{TEST_IP6}/128"),
        ),
    )
    sent: dict[int, tuple[int, bytes]] = {}  # tag: (packet_length, frame)
    with lan.capture() as mirrors:
        for length in CUT_LENGTHS:
            st = state(
                [everything], [session(f"s{length}", "f", 1, vni=length, packet_length=length)]
            )
            lan.dataplane.apply(compile_plan(st))
            ingress, egress = cut_frames(length * 100)
            send_frames(lan.test, "eth0", ingress)
            send_frames(lan.source, "eth0", egress)
            frames = ingress + egress
            sent.update({int.from_bytes(f[8:12], "big"): (length, f) for f in frames})
            if length in SOCKET_LENGTHS:  # a real connection: the kernel's own TCP segments
                server = lan.source.popen(["nc", "-l", "5001"], stdout=subprocess.DEVNULL)
                time.sleep(0.2)
                lan.test.run(["bash", "-c", f"echo hello | nc -N {SOURCE_IP} 5001"])
                server.wait(timeout=10)
            time.sleep(0.1)
            uncut = lan.dataplane.counters().uncut.get(f"s{length}")
            too_short = [f for f in frames if length < shortest_sent(f)]
            assert (uncut.packets if uncut else 0) == len(too_short), (length, uncut)
            if too_short:
                assert uncut is not None and uncut.bytes == sum(len(f) for f in too_short)
    assert lan.target_vxlan_count() == len(mirrors)
    tagged = by_tag(mirrors)
    problems = []
    for tag, (length, frame) in sent.items():
        got = [m.inner for m in tagged.get(tag, [])]
        want = [] if length < shortest_sent(frame) else [frame[:length]]
        if got != want:
            problems.append(
                f"tag {tag} ({len(frame)} bytes, packet_length {length}): "
                f"got {[len(g) for g in got]} bytes {[g.hex() for g in got]}"
            )
    assert not problems, "\n".join(problems)
    assert all(m.vni >= 34 for m in mirrors)
    # One flow (IPv6 behind extension headers, tag x00) at every length, also where the
    # copy left marked IPv4: one outer source port.
    ports = {m.outer_sport for tag, ms in tagged.items() if tag % 100 == 0 for m in ms}
    assert len(ports) == 1, ports
    for length in SOCKET_LENGTHS:
        segments = [m for m in mirrors if m.vni == length and m.protocol == 6]
        assert len(segments) >= 6  # handshake, data, teardown: both directions
        assert {m.inner_length for m in segments} == {length}


# --- 5. one outer source port for both directions of a flow -------------------------------


_ECHO_CLIENT = """
import socket, sys
for address in sys.argv[1:]:
    for _ in range(12):
        c = socket.create_connection((address, {ECHO_PORT}))
        c.sendall(b"hello")
        assert c.recv(100) == b"hello"
        c.close()
""".replace("{ECHO_PORT}", str(ECHO_PORT))


def flow_label(m: Mirror) -> int | None:
    if m.inner[12:14] != b"\x86\xdd":
        return None
    return int.from_bytes(m.inner[14:18], "big") & 0xFFFFF


def test_both_directions_of_a_flow_leave_with_one_outer_source_port(lan: Lan) -> None:
    """TCP over IPv4 and IPv6 (Linux gives each direction of an IPv6 flow its own flow
    label) and ICMP echo: every mirror of one flow has the same outer UDP source port,
    whichever way it went; different flows spread over different ports."""
    for ns in (lan.test, lan.source):
        ns.run(["sysctl", "-qw", "net.ipv6.auto_flowlabels=1"])
    rules = []
    for family, icmp, here, there in (
        (EtherType.IPV4, Protocol.ICMP, f"{SOURCE_IP}/32", f"{TEST_IP}/32"),
        (V6, Protocol.ICMPV6, f"{SOURCE_IP6}/128", f"{TEST_IP6}/128"),
    ):
        base = 1 if family is EtherType.IPV4 else 3
        for protocol, priority in ((TCP, base), (icmp, base + 1)):
            # Only the test's flows (the hosts' own neighbour discovery stays out).
            rules.append(
                rule(f"in{priority}", priority, ethertype=family, protocol=protocol, dst=here)
            )
            rules.append(
                rule(
                    f"out{priority}",
                    priority,
                    direction=Direction.EGRESS,
                    ethertype=family,
                    protocol=protocol,
                    dst=there,
                )
            )
    both = Filter(id="f", name="f", rules=tuple(rules))
    lan.dataplane.apply(compile_plan(state([both], [session("s", "f", 1, vni=7)])))
    with echo_server(lan.source), lan.capture() as mirrors:
        lan.test.run([sys.executable, "-c", _ECHO_CLIENT, SOURCE_IP, SOURCE_IP6])
        lan.test.run(["ping", "-c", "3", "-i", "0.05", SOURCE_IP])
        lan.test.run(["ping", "-6", "-c", "3", "-i", "0.05", SOURCE_IP6])
    flows: dict[tuple[object, ...], list[Mirror]] = defaultdict(list)
    for m in mirrors:
        ends = sorted([(m.src, m.sport), (m.dst, m.dport)], key=str)
        flows[(m.protocol, *ends)].append(m)
    tcp_flows = {k: v for k, v in flows.items() if k[0] == 6}
    assert len(tcp_flows) == 24
    assert {k[0] for k in flows} == {6, 1, 58}
    labels_differ = 0
    for key, ms in flows.items():
        directions = {(m.src, m.sport) for m in ms}
        assert len(directions) == 2, key  # both ways mirrored
        assert len({m.outer_sport for m in ms}) == 1, (key, sorted({m.outer_sport for m in ms}))
        by_direction = {(m.src, m.sport): flow_label(m) for m in ms}
        labels_differ += len(set(by_direction.values())) == 2 and None not in by_direction.values()
    assert labels_differ >= 10  # the IPv6 flows really did carry a label per direction
    assert len({ms[0].outer_sport for ms in flows.values()}) >= 10  # flows spread


def test_jumbo_frames_are_mirrored_and_cut_exactly(lan: Lan) -> None:
    """A 9000-byte MTU on the source's link: each copy crosses vxtap's copy devices whole
    (a veth drops what exceeds its MTU) and is cut to packet_length, also on the path
    that rewrites the copy (IPv6 behind extension headers, cut inside them)."""
    for ns, device in ((lan.switch, "p-test"), (lan.switch, "p-src"), (lan.test, "eth0")):
        ns.run(["ip", "link", "set", device, "mtu", "9000"])
    lan.source.run(["ip", "link", "set", "eth0", "mtu", "9000"])
    everything = Filter(
        id="f",
        name="f",
        rules=(
            rule("in4", 1, dst=f"{SOURCE_IP}/32"),
            rule("in6", 2, ethertype=V6, dst=f"{SOURCE_IP6}/128"),
            rule("out6", 1, direction=Direction.EGRESS, ethertype=V6, dst=f"{TEST_IP6}/128"),
        ),
    )
    sent: dict[int, tuple[int, bytes]] = {}
    with lan.capture() as mirrors:
        for length in (63, 96, 1460):
            st = state([everything], [session(f"s{length}", "f", 1, packet_length=length)])
            lan.dataplane.apply(compile_plan(st))
            frames = [
                ipv4(length * 10, 17, udp(1, 2, bytes(8958))),  # a 9000-byte IP packet
                ipv6(length * 10 + 1, 0, extension(60) + extension(6) + tcp(1, 2, bytes(8900))),
            ]
            send_frames(lan.test, "eth0", frames)
            # From a packet socket: its transport header is set behind the extension
            # headers, so the kernel alone cannot cut at 63.
            body = extension(60) + extension(6) + tcp(1, 2, bytes(8900))
            egress = [ipv6(length * 10 + 2, 0, body, src=SOURCE_IP6, dst=TEST_IP6)]
            send_frames(lan.source, "eth0", egress)
            sent.update({int.from_bytes(f[8:12], "big"): (length, f) for f in frames + egress})
            time.sleep(0.1)
    got = {tag: [m.inner for m in ms] for tag, ms in by_tag(mirrors).items()}
    assert got == {tag: [frame[:length]] for tag, (length, frame) in sent.items()}
    # A copy device's MTU set back is drift, and apply restores it.
    plan = compile_plan(st)
    lan.source.run(["ip", "link", "set", "vxtap-mk0", "mtu", "1500"])
    assert lan.dataplane.drift(plan) == ["device vxtap-mk0 has MTU 1500, not 65535"]
    lan.dataplane.apply(plan)
    assert lan.dataplane.drift(plan) == []


# --- 7. frames sent to a broadcast or multicast MAC are mirrored like any other ------------


def test_broadcast_and_multicast_frames_are_mirrored(lan: Lan) -> None:
    """A copy keeps its frame's destination MAC (broadcast, IPv4 and IPv6 multicast) in
    the inner frame, and is sent like any other: the outer Ethernet header is not the
    inner one (`bpf_redirect_neigh` refuses a packet whose destination is multicast)."""
    everything = Filter(
        id="f",
        name="f",
        rules=(
            rule("in4", 1, protocol=UDP, dst=f"{SOURCE_IP}/32"),
            rule("in4b", 2, protocol=UDP, dst="255.255.255.255/32"),
            rule("in4m", 3, protocol=UDP, dst="224.0.0.0/4"),
        ),
    )
    lan.dataplane.apply(compile_plan(state([everything], [session("s", "f", 1)])))
    destinations = {
        1: (bytes.fromhex("ffffffffffff"), SOURCE_IP),
        2: (bytes.fromhex("ffffffffffff"), "255.255.255.255"),
        3: (bytes.fromhex("01005e000001"), "224.0.0.1"),
        4: (bytes.fromhex("333300000001"), SOURCE_IP),  # an IPv6 multicast MAC
        5: (NOBODY, SOURCE_IP),
    }
    frames = [
        mac + ipv4(tag, 17, udp(1000, 2000, bytes(40)), dst=dst)[6:]
        for tag, (mac, dst) in destinations.items()
    ]
    with lan.capture() as mirrors:
        send_frames(lan.test, "eth0", frames)
    tagged = by_tag(mirrors)
    assert {tag: [m.inner for m in tagged.get(tag, [])] for tag in destinations} == {
        tag: [frame[:96]] for tag, frame in zip(destinations, frames, strict=True)
    }
