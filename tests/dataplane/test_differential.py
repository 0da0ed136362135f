"""The kernel against the reference evaluator: random sessions and packets, zero mismatches.

hypothesis generates filters, sessions (priorities, enabled, accept/reject,
IPv4/IPv6 CIDRs, port ranges, protocols, packet lengths) and a batch of
packets per configuration. The configuration goes through `compile_plan` and
`Dataplane.apply` in a real "source host" namespace; each packet is written as
a raw frame (AF_PACKET) into a source interface, ingress from a peer namespace
or egress from the source host itself; a receiver on the target decodes the
VXLAN that arrives (VNI, outer source address, inner length). Every frame
carries its sequence number in its source MAC, which survives truncation, so
each mirror is matched to the packet it copies and compared with
`vxtap.evaluate.explain`: the same session (VNI), the source interface's address
as outer source, the length cut to packet_length, or nothing at all.

Topology (namespaces):  peer p0,p1 ══ eth0,eth1 source-host u0 ══ t0 target
(the underlay carries IPv4 and IPv6: each session's target is one or the other)
"""

from __future__ import annotations

import ipaddress
import os
import queue
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from support.dataplane_lan import stop
from vxtap.evaluate import ETHERTYPE_IPV4, Packet, explain
from vxtap.model import (
    IP_PROTOCOL_NUMBER,
    Action,
    DesiredState,
    Direction,
    EtherType,
    Filter,
    Port,
    PortRange,
    Protocol,
    Rule,
    Session,
)
from vxtap.netns import Namespace, NamespaceThread, veth

pytestmark = pytest.mark.netns

EXAMPLES = 60
PACKETS_PER_EXAMPLE = 48
MIN_CASES = 2000

SOURCE_DEVICES = ("eth0", "eth1")
PEER_DEVICES = {"eth0": "p0", "eth1": "p1"}
PORT_IDS = {"eth0": "port-eth0", "eth1": "port-eth1"}
SOURCE_ADDRESSES = {"eth0": "10.77.0.1", "eth1": "10.78.0.1"}
# The sources' IPv6 addresses live on the underlay device: IPv6 stays off on the
# source devices so that the kernel adds no traffic (RS, MLD) of its own there.
SOURCE_ADDRESSES6 = {"eth0": "fd77::1", "eth1": "fd78::1"}
UNDERLAY_SOURCE, UNDERLAY_TARGET = "10.99.0.1", "10.99.0.2"
UNDERLAY_SOURCE6, UNDERLAY_TARGET6 = "fd99::1", "fd99::2"
TARGET = Port(id="port-target", host="target", device="t0", ipv4=(UNDERLAY_TARGET,))
TARGET6 = Port(id="port-target6", host="target", device="t0", ipv6=(UNDERLAY_TARGET6,))
# Frames from the peer are addressed to nobody (no host answers them), so the
# source host's stack never replies and adds no traffic of its own.
NOBODY_MAC = bytes.fromhex("02ffffffff01")


# --- raw frames ---------------------------------------------------------------------------


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def seq_mac(seq: int) -> bytes:
    """A locally administered unicast MAC carrying the frame's sequence number."""
    return b"\x02\xaa" + seq.to_bytes(4, "big")


def build_frame(
    seq: int,
    packet: Packet,
    payload_length: int,
    fragment: str = "none",
    decoy: tuple[int, int] = (80, 80),
) -> bytes:
    """The Ethernet frame for `packet`, tagged with `seq` (checksums are not checked here).

    `fragment`: "none", "first" (more fragments follow, offset 0: ports as usual) or
    "later" (offset 24: a non-first fragment, whose data starts with bytes that read as
    the ports `decoy`, the way a careless parser would read them)."""
    ethernet = NOBODY_MAC + seq_mac(seq) + struct.pack("!H", packet.ethertype)
    payload = bytes((seq + i) & 0xFF for i in range(payload_length))
    if not packet.is_ip:
        return ethernet + payload
    assert packet.protocol is not None and packet.src is not None and packet.dst is not None
    sport, dport = (packet.sport, packet.dport) if fragment != "later" else decoy
    if packet.protocol == 6:  # TCP: data offset 5, PSH+ACK
        l4 = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 0x50, 0x18, 512, 0, 0)
    elif packet.protocol == 17:
        l4 = struct.pack("!HHHH", sport, dport, 8 + payload_length, 0)
    elif packet.protocol in (1, 58):  # echo request
        l4 = struct.pack("!BBHHH", 8 if packet.protocol == 1 else 128, 0, 0, 1, seq & 0xFFFF)
    else:
        l4 = b"\0" * 4
    body = l4 + payload
    offset = 3 if fragment == "later" else 0  # in 8-byte units
    more = fragment == "first" or seq % 2 == 1  # later fragments: middle or last ones
    if packet.ethertype == ETHERTYPE_IPV4:
        flags = 0x4000 if fragment == "none" else (0x2000 if more else 0) | offset
        header = struct.pack(
            "!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), seq & 0xFFFF, flags, 64,
            packet.protocol, 0, packet.src.packed, packet.dst.packed,
        )  # fmt: skip
        header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
    else:
        next_header = packet.protocol
        if fragment != "none":
            body = struct.pack("!BBHI", packet.protocol, 0, offset << 3 | more, seq) + body
            next_header = 44
        header = struct.pack(
            "!IHBB16s16s", 0x6 << 28 | (seq & 0xFFFFF), len(body), next_header, 64,
            packet.src.packed, packet.dst.packed,
        )  # fmt: skip
    return ethernet + header + body


# Runs inside a namespace: writes the hex frames of each input line to the named device.
SENDER = """
import socket, sys
socks = {}
for line in sys.stdin:
    device, *frames = line.split()
    if device not in socks:
        socks[device] = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        socks[device].bind((device, 0))
    for frame in frames:
        socks[device].send(bytes.fromhex(frame))
    print("sent", flush=True)
"""


class Sender:
    def __init__(self, ns: Namespace) -> None:
        self.process = ns.popen(
            [sys.executable, "-c", SENDER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )

    def send(self, device: str, frames: list[bytes]) -> None:
        if not frames:
            return
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(f"{device} {' '.join(f.hex() for f in frames)}\n".encode())
        self.process.stdin.flush()
        assert self.process.stdout.readline() == b"sent\n"

    def stop(self) -> None:
        stop(self.process, signal.SIGKILL)


# --- capture at the target -------------------------------------------------------------------


@dataclass(frozen=True)
class Mirror:
    seq: int
    vni: int
    inner_length: int
    outer_source: str


# Runs inside the target namespace: prints "seq vni inner-length" for each VXLAN copy of one
# of our tagged frames, and "foreign <hex>" for anything else sent to UDP port 4789.
RECEIVER = """
import socket, struct, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 24)
s.bind((sys.argv[1], 0))
print("listening", flush=True)
while True:
    frame, address = s.recvfrom(65535)
    if address[2] == socket.PACKET_OUTGOING:
        continue
    if frame[12:14] == b"\\x08\\x00":
        udp, protocol = 14 + (frame[14] & 0x0F) * 4, frame[23]
        outer_source = socket.inet_ntoa(frame[26:30])
    elif frame[12:14] == b"\\x86\\xdd":
        udp, protocol = 14 + 40, frame[20]
        outer_source = socket.inet_ntop(socket.AF_INET6, frame[22:38])
    else:
        continue
    if protocol != 17 or struct.unpack_from("!H", frame, udp + 2)[0] != 4789:
        continue
    vxlan = udp + 8
    inner = frame[vxlan + 8 :]
    if frame[vxlan] == 0x08 and inner[6:8] == b"\\x02\\xaa":
        vni = int.from_bytes(frame[vxlan + 4 : vxlan + 7], "big")
        print(int.from_bytes(inner[8:12], "big"), vni, len(inner), outer_source, flush=True)
    else:
        print("foreign", frame.hex(), flush=True)
"""


class Capture:
    """An AF_PACKET receiver on the target's underlay device, decoding VXLAN as it arrives.

    (tcpdump -w with --immediate-mode was tried first: it intermittently wrote a
    whole batch of frames late or never, while the device counters showed them
    received, which made the comparison flaky.)
    """

    def __init__(self, ns: Namespace, device: str) -> None:
        self.process = ns.popen([sys.executable, "-c", RECEIVER, device], stdout=subprocess.PIPE)
        assert self.process.stdout is not None
        assert self.process.stdout.readline() == b"listening\n"
        self.lines: queue.Queue[bytes] = queue.Queue()
        self.foreign: list[bytes] = []
        self.pump = threading.Thread(target=self._pump, daemon=True)
        self.pump.start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)

    def read(self) -> list[Mirror]:
        mirrors = []
        while True:
            try:
                line = self.lines.get_nowait().decode()
            except queue.Empty:
                return mirrors
            if line.startswith("foreign"):
                self.foreign.append(bytes.fromhex(line.split()[1]))
            else:
                seq, vni, length, outer_source = line.split()
                mirrors.append(Mirror(int(seq), int(vni), int(length), outer_source))

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()
        self.pump.join()  # it reads the pipe to its end before the pipe is closed
        assert self.process.stdout is not None
        self.process.stdout.close()


# --- what hypothesis generates ---------------------------------------------------------------

V4 = [ipaddress.ip_address(f"10.1.0.{i}") for i in range(6)] + [
    ipaddress.ip_address(UNDERLAY_TARGET)
]
V6 = [ipaddress.ip_address(f"fd01::{i}") for i in range(6)] + [
    ipaddress.ip_address(UNDERLAY_TARGET6)
]
L4_PORTS = [0, *range(1, 7), 4789]  # 0: outside every range, 1-65535 included
IPAddr = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNet = ipaddress.IPv4Network | ipaddress.IPv6Network


@st.composite
def cidrs(draw: st.DrawFn, ethertype: EtherType) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    base = draw(st.sampled_from(V4 if ethertype is EtherType.IPV4 else V6))
    width = base.max_prefixlen
    prefix = draw(st.sampled_from([0, 1, width - 2, width - 1, width]))
    return ipaddress.ip_network(f"{base}/{prefix}", strict=False)


port_ranges = st.one_of(
    st.sampled_from(L4_PORTS[1:]).map(lambda p: PortRange(start=p, end=p)),
    st.tuples(st.integers(1, 6), st.integers(1, 4)).map(
        lambda t: PortRange(start=t[0], end=t[0] + t[1])
    ),
    st.just(PortRange(start=1, end=65535)),
    st.just(PortRange(start=4000, end=5000)),
)


@st.composite
def rules(draw: st.DrawFn, filter_id: str, index: int, priority: int) -> Rule:
    ethertype = draw(st.sampled_from(EtherType))
    icmp = Protocol.ICMP if ethertype is EtherType.IPV4 else Protocol.ICMPV6
    protocol = draw(st.sampled_from([Protocol.TCP, Protocol.UDP, Protocol.ALL, icmp]))
    ports = protocol.has_ports
    return Rule(
        id=f"{filter_id}-r{index}",
        filter_id=filter_id,
        direction=draw(st.sampled_from(Direction)),
        priority=priority,
        action=draw(st.sampled_from([Action.ACCEPT, Action.ACCEPT, Action.REJECT])),
        ethertype=ethertype,
        protocol=protocol,
        source_cidr=draw(st.none() | st.none() | cidrs(ethertype)),
        destination_cidr=draw(st.none() | st.none() | cidrs(ethertype)),
        source_ports=draw(st.none() | st.none() | port_ranges) if ports else None,
        destination_ports=draw(st.none() | port_ranges) if ports else None,
    )


@st.composite
def states(draw: st.DrawFn) -> DesiredState:
    filters = []
    for f in range(draw(st.integers(1, 3))):
        priorities = draw(st.lists(st.integers(1, 65535), min_size=0, max_size=7, unique=True))
        filter_id = f"f{f}"
        filters.append(
            Filter(
                id=filter_id,
                name=filter_id,
                rules=tuple(draw(rules(filter_id, i, p)) for i, p in enumerate(priorities)),
            )
        )
    session_priorities = draw(st.lists(st.integers(1, 32766), min_size=1, max_size=4, unique=True))
    per_source: dict[str, int] = {}
    sessions = []
    for i, priority in enumerate(session_priorities):
        wanted = draw(st.sets(st.sampled_from(SOURCE_DEVICES), min_size=1))
        # docs/behaviour.md §1.6: a port is a source of at most 3 sessions.
        sources = [d for d in sorted(wanted) if per_source.get(d, 0) < 3]
        if not sources:
            continue
        for device in sources:
            per_source[device] = per_source.get(device, 0) + 1
        sessions.append(
            Session(
                id=f"s{i}",
                name=f"s{i}",
                filter_id=draw(st.sampled_from(filters)).id,
                sources=tuple(PORT_IDS[d] for d in sources),
                target_id=draw(st.sampled_from([TARGET.id, TARGET6.id])),
                vni=1000 + i,  # distinct VNIs tell the sessions apart at the target
                packet_length=draw(st.sampled_from([60, 96, 150, 1460])),
                priority=priority,
                enabled=draw(st.sampled_from([True, True, True, False])),
            )
        )
    return DesiredState(
        host="source",
        revision=str(draw(st.integers(0, 10**9))),
        ports=tuple(
            Port(
                id=PORT_IDS[d],
                host="source",
                device=d,
                ipv4=(SOURCE_ADDRESSES[d],),
                ipv6=(SOURCE_ADDRESSES6[d],),
            )
            for d in SOURCE_DEVICES
        ),
        sessions=tuple(sessions),
        filters=tuple(filters),
        targets=(TARGET, TARGET6),
    )


@dataclass(frozen=True)
class Case:
    device: str
    direction: Direction
    packet: Packet
    payload_length: int
    fragment: str = "none"  # "first", "later": see build_frame
    decoy: tuple[int, int] = (80, 80)


def _address_in(draw: st.DrawFn, network: IPNet | None, pool: list[IPAddr]) -> IPAddr:
    inside = [a for a in pool if network is not None and a in network]
    if network is None or not inside:
        if network is not None and network.num_addresses <= 8:
            return draw(st.sampled_from(list(network)))
        return draw(st.sampled_from(pool))
    return draw(st.sampled_from(inside))


# Mostly whole packets; sometimes a first fragment (ports as usual) or a later one (none).
FRAGMENTS = st.sampled_from(["none"] * 6 + ["first", "later", "later"])


@st.composite
def cases(draw: st.DrawFn, state: DesiredState) -> Case:
    """A packet: often one aimed at a rule of the state (so rule order matters), else random."""
    aimed = [
        (session, rule)
        for session in state.sessions
        for f in state.filters
        if f.id == session.filter_id
        for rule in f.rules
    ]
    if aimed and draw(st.integers(0, 9)) < 6:
        session, rule = draw(st.sampled_from(aimed))
        devices = [d for d in SOURCE_DEVICES if PORT_IDS[d] in session.sources]
        pool = V4 if rule.ethertype is EtherType.IPV4 else V6
        icmp = 1 if rule.ethertype is EtherType.IPV4 else 58
        if rule.protocol is Protocol.ALL:
            protocol = draw(st.sampled_from([6, 17, icmp, 47]))
        else:
            protocol = IP_PROTOCOL_NUMBER[rule.protocol]
        ports = protocol in (6, 17)

        def port_in(r: PortRange | None) -> int:
            if r is None:
                return draw(st.sampled_from(L4_PORTS))
            return draw(st.sampled_from([r.start, r.end, (r.start + r.end) // 2]))

        fragment = draw(FRAGMENTS)
        later = fragment == "later"
        packet = Packet.ip(
            protocol,
            _address_in(draw, rule.source_cidr, pool),
            _address_in(draw, rule.destination_cidr, pool),
            port_in(rule.source_ports) if ports and not later else None,
            port_in(rule.destination_ports) if ports and not later else None,
            non_first_fragment=later,
        )
        # A later fragment's data reads as ports the rule accepts, or not.
        decoy = (port_in(rule.source_ports), port_in(rule.destination_ports))
        return Case(
            device=draw(st.sampled_from(devices)),
            direction=rule.direction,
            packet=packet,
            payload_length=draw(st.integers(0, 200)),
            fragment=fragment,
            decoy=decoy,
        )
    kind = draw(st.sampled_from(["v4", "v4", "v6", "v6", "non-ip"]))
    if kind == "non-ip":
        packet = Packet.non_ip(draw(st.sampled_from([0x0806, 0x88CC, 0x88B5])))
    else:
        pool = V4 if kind == "v4" else V6
        icmp = 1 if kind == "v4" else 58
        protocol = draw(st.sampled_from([6, 6, 17, 17, icmp, 47]))
        fragment = draw(FRAGMENTS)
        ports = protocol in (6, 17) and fragment != "later"
        packet = Packet.ip(
            protocol,
            draw(st.sampled_from(pool)),
            draw(st.sampled_from(pool)),
            draw(st.sampled_from(L4_PORTS)) if ports else None,
            draw(st.sampled_from(L4_PORTS)) if ports else None,
            non_first_fragment=fragment == "later",
        )
        return Case(
            device=draw(st.sampled_from(SOURCE_DEVICES)),
            direction=draw(st.sampled_from(Direction)),
            packet=packet,
            payload_length=draw(st.integers(0, 200)),
            fragment=fragment,
            decoy=(draw(st.sampled_from(L4_PORTS)), draw(st.sampled_from(L4_PORTS))),
        )
    return Case(
        device=draw(st.sampled_from(SOURCE_DEVICES)),
        direction=draw(st.sampled_from(Direction)),
        packet=packet,
        payload_length=draw(st.integers(0, 200)),
    )


# --- the test ------------------------------------------------------------------------------


@dataclass
class Lab:
    peer: Namespace
    source: Namespace
    target: Namespace
    kernel: NamespaceThread
    peer_sender: Sender
    source_sender: Sender
    capture: Capture
    seq: int = 0
    cases_checked: int = 0
    mirrors_seen: int = 0
    mirrors_over_ipv6: int = 0
    reports: list[str] = field(default_factory=list)


def _quiet(ns: Namespace, device: str) -> None:
    """No IPv6 autoconfiguration: the test's frames are the only traffic on the device."""
    ns.run(["sysctl", "-qw", f"net.ipv6.conf.{device}.disable_ipv6=1"])


@pytest.fixture
def lab(make_namespace: Callable[[str], Namespace]) -> Iterator[Lab]:
    from vxtap.dataplane.kernel import Dataplane

    peer, source, target = (make_namespace("ag") for _ in range(3))
    for device, peer_device in PEER_DEVICES.items():
        veth(peer, peer_device, source, device)
        _quiet(peer, peer_device)
        _quiet(source, device)
        source.run(["ip", "addr", "add", f"{SOURCE_ADDRESSES[device]}/24", "dev", device])
    veth(source, "u0", target, "t0")
    source.run(["ip", "addr", "add", f"{UNDERLAY_SOURCE}/24", "dev", "u0"])
    target.run(["ip", "addr", "add", f"{UNDERLAY_TARGET}/24", "dev", "t0"])
    source.run(["ip", "addr", "add", f"{UNDERLAY_SOURCE6}/64", "dev", "u0", "nodad"])
    for address in SOURCE_ADDRESSES6.values():
        source.run(["ip", "addr", "add", f"{address}/128", "dev", "u0", "nodad"])
    target.run(["ip", "addr", "add", f"{UNDERLAY_TARGET6}/64", "dev", "t0", "nodad"])
    kernel = NamespaceThread(source)
    senders: list[Sender] = []
    capture: Capture | None = None
    try:
        senders = [Sender(peer), Sender(source)]
        capture = Capture(target, "t0")
        yield Lab(peer, source, target, kernel, senders[0], senders[1], capture)
    finally:
        if capture is not None:
            capture.stop()
        for sender in senders:
            sender.stop()
        kernel(lambda: Dataplane().cleanup())
        kernel.close()


def run_batch(lab: Lab, state: DesiredState, batch: list[Case]) -> list[str]:
    """Apply `state`, send `batch`, and return every disagreement with the evaluator."""
    from vxtap.dataplane.kernel import Dataplane
    from vxtap.dataplane.plan import compile_plan

    plan = compile_plan(state)
    lab.kernel(lambda: Dataplane().apply(plan))
    lab.capture.read()  # forget anything that arrived before this configuration
    expected: dict[int, tuple[int | None, int, str, Case, str]] = {}
    by_port_direction: dict[tuple[str, Direction], list[bytes]] = {}
    vni_of = {s.id: s.vni for s in state.sessions}
    v6_target = {s.id: s.target_id == TARGET6.id for s in state.sessions}
    snap_of = {s.id: s.packet_length for s in state.sessions}
    for case in batch:
        lab.seq += 1
        frame = build_frame(lab.seq, case.packet, case.payload_length, case.fragment, case.decoy)
        verdict = explain(state, PORT_IDS[case.device], case.direction, case.packet)
        if verdict.session_id is None:
            expected[lab.seq] = (None, 0, "", case, verdict.reason)
        else:
            length = min(len(frame), snap_of[verdict.session_id])
            # docs/behaviour.md §3.1: outer source = the source port's address, target's family.
            addresses = SOURCE_ADDRESSES6 if v6_target[verdict.session_id] else SOURCE_ADDRESSES
            expected[lab.seq] = (
                vni_of[verdict.session_id],
                length,
                addresses[case.device],
                case,
                verdict.reason,
            )
        key = (case.device, case.direction)
        by_port_direction.setdefault(key, []).append(frame)
    for (device, direction), frames in by_port_direction.items():
        if direction is Direction.INGRESS:
            lab.peer_sender.send(PEER_DEVICES[device], frames)
        else:
            lab.source_sender.send(device, frames)
    wanted = sum(1 for vni, *_ in expected.values() if vni is not None)
    seen: dict[int, list[Mirror]] = {}
    deadline = time.monotonic() + 3.0
    count = 0
    # Wait for every predicted mirror, then a little longer for any unpredicted one.
    while time.monotonic() < deadline and count < wanted:
        time.sleep(0.02)
        for mirror in lab.capture.read():
            seen.setdefault(mirror.seq, []).append(mirror)
            count += 1
    time.sleep(0.1)
    for mirror in lab.capture.read():
        seen.setdefault(mirror.seq, []).append(mirror)
    lab.mirrors_seen += sum(len(v) for v in seen.values())
    lab.mirrors_over_ipv6 += sum(":" in m.outer_source for v in seen.values() for m in v)
    lab.cases_checked += len(batch)
    problems = []
    for seq, (vni, length, outer_source, case, reason) in expected.items():
        got = [(m.vni, m.inner_length, m.outer_source) for m in seen.pop(seq, [])]
        want = [] if vni is None else [(vni, length, outer_source)]
        if got != want:
            problems.append(
                f"seq {seq}: {case.packet} {case.direction} on {case.device} "
                f"(payload {case.payload_length}, fragment {case.fragment} {case.decoy}): "
                f"expected {want} ({reason}), got {got}"
            )
    for seq, mirrors in seen.items():
        problems.append(f"seq {seq}: mirrored {mirrors} but not part of this batch")
    if problems:  # what the kernel counted tells where the copies went missing
        counters = lab.kernel(lambda: Dataplane().counters())
        drift = lab.kernel(lambda: Dataplane().drift(plan))
        problems.append(f"kernel counters: {counters}; drift: {drift or 'none'}")
    return problems


def test_kernel_agrees_with_the_evaluator(lab: Lab) -> None:
    if os.environ.get("VXTAP_DIFFERENTIAL_EXAMPLES"):
        examples = int(os.environ["VXTAP_DIFFERENTIAL_EXAMPLES"])
    else:
        examples = EXAMPLES

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.generate],  # a shrink re-runs batches for minutes; the report is enough
        suppress_health_check=list(HealthCheck),
    )
    @given(states(), st.data())
    def check(state: DesiredState, data: st.DataObject) -> None:
        batch = data.draw(
            st.lists(cases(state), min_size=PACKETS_PER_EXAMPLE, max_size=PACKETS_PER_EXAMPLE)
        )
        problems = run_batch(lab, state, batch)
        assert not problems, "\n".join(problems[:20] + problems[-1:])

    check()
    assert not lab.capture.foreign, f"{len(lab.capture.foreign)} captured frames were not ours"
    if examples == EXAMPLES:
        assert lab.cases_checked >= MIN_CASES
        assert 0 < lab.mirrors_over_ipv6 < lab.mirrors_seen  # both underlays exercised
    print(
        f"differential: {lab.cases_checked} packets, {lab.mirrors_seen} mirrors "
        f"({lab.mirrors_over_ipv6} over the IPv6 underlay), 0 mismatches"
    )
