"""Data plane test helpers: a small LAN in namespaces, like the seed.

Test .161, source .230, target .164 on one bridge.

`Lan.capture()` records what reaches the target with tcpdump and decodes the pcap
(outer IP/UDP/VXLAN and the inner frame) so tests can assert packet by packet.
The target drops VXLAN at its netdev ingress (after tcpdump saw it), counting it,
so it never answers with port-unreachable noise.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from vxtap.dataplane.kernel import Dataplane
from vxtap.model import (
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
    TargetKind,
)
from vxtap.netns import Namespace

TEST_IP, SOURCE_IP, TARGET_IP = "192.168.0.161", "192.168.0.230", "192.168.0.164"
TEST_IP6, SOURCE_IP6, TARGET_IP6 = "fd00::161", "fd00::230", "fd00::164"
SOURCE_PORT = Port(
    id="port-source", host="source", device="eth0", ipv4=(SOURCE_IP,), ipv6=(SOURCE_IP6,)
)
TARGET_PORT = Port(id="port-target", host="target", device="eth0", ipv4=(TARGET_IP,))
TARGET6_PORT = Port(id="port-target6", host="target", device="eth0", ipv6=(TARGET_IP6,))


@dataclass(frozen=True)
class Mirror:
    """One VXLAN packet seen at the target, decoded."""

    outer_src: str
    outer_dst: str
    outer_sport: int
    outer_version: int
    vxlan_flags: int
    vni: int
    inner_length: int  # the inner frame as carried (after truncation)
    ethertype: int
    src: str | None = None
    dst: str | None = None
    protocol: int | None = None
    sport: int | None = None
    dport: int | None = None
    ip_length: int | None = None  # from the inner IP header: the original packet's size
    tcp_payload: int | None = None  # original TCP payload length, from the headers
    inner: bytes = b""  # the inner frame as carried
    outer_fragment: bool = False  # the outer packet is an IP fragment
    outer_checksum_ok: bool | None = None  # the outer IPv4 header checksum (IPv6: None)


def _decode_inner(frame: bytes) -> dict[str, object]:
    out: dict[str, object] = {"ethertype": struct.unpack_from("!H", frame, 12)[0]}
    ip = frame[14:]
    l4: bytes
    if out["ethertype"] == 0x0800 and len(ip) >= 20:
        ihl = (ip[0] & 0xF) * 4
        out.update(
            src=str(ipaddress.IPv4Address(ip[12:16])),
            dst=str(ipaddress.IPv4Address(ip[16:20])),
            protocol=ip[9],
            ip_length=struct.unpack_from("!H", ip, 2)[0],
        )
        l4, l3_header, total = ip[ihl:], ihl, struct.unpack_from("!H", ip, 2)[0]
    elif out["ethertype"] == 0x86DD and len(ip) >= 40:
        out.update(
            src=str(ipaddress.IPv6Address(ip[8:24])),
            dst=str(ipaddress.IPv6Address(ip[24:40])),
            protocol=ip[6],
            ip_length=40 + struct.unpack_from("!H", ip, 4)[0],
        )
        l4, l3_header, total = ip[40:], 40, 40 + struct.unpack_from("!H", ip, 4)[0]
    else:
        return out
    if out["protocol"] in (6, 17) and len(l4) >= 4:
        out["sport"], out["dport"] = struct.unpack_from("!HH", l4, 0)
    if out["protocol"] == 6 and len(l4) >= 13:
        out["tcp_payload"] = total - l3_header - (l4[12] >> 4) * 4
    return out


def ip_checksum_ok(header: bytes) -> bool:
    """An IPv4 header's one's-complement sum, checksum included, is 0xFFFF."""
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total == 0xFFFF


def decode_pcap(data: bytes) -> list[Mirror]:
    mirrors: list[Mirror] = []
    offset = 24
    while offset + 16 <= len(data):
        incl = struct.unpack_from("<I", data, offset + 8)[0]
        frame = data[offset + 16 : offset + 16 + incl]
        offset += 16 + incl
        ethertype = struct.unpack_from("!H", frame, 12)[0]
        ip = frame[14:]
        if ethertype == 0x0800:
            ihl = (ip[0] & 0xF) * 4
            src, dst = ipaddress.IPv4Address(ip[12:16]), ipaddress.IPv4Address(ip[16:20])
            udp, version = ip[ihl:], 4
            fragment = bool(struct.unpack_from("!H", ip, 6)[0] & 0x3FFF)
            checksum_ok: bool | None = ip_checksum_ok(ip[:ihl])
        elif ethertype == 0x86DD:
            src, dst = ipaddress.IPv6Address(ip[8:24]), ipaddress.IPv6Address(ip[24:40])
            udp, version = ip[40:], 6
            fragment = ip[6] == 44
            checksum_ok = None
            if fragment:
                udp = udp[8:]
        else:
            continue
        sport, dport = struct.unpack_from("!HH", udp, 0)
        if dport != 4789:
            continue
        vxlan = udp[8:16]
        inner = udp[16:]
        mirrors.append(
            Mirror(
                outer_src=str(src),
                outer_dst=str(dst),
                outer_sport=sport,
                outer_version=version,
                vxlan_flags=vxlan[0],
                vni=int.from_bytes(vxlan[4:7], "big"),
                inner_length=len(inner),
                inner=inner,
                outer_fragment=fragment,
                outer_checksum_ok=checksum_ok,
                **_decode_inner(inner),  # type: ignore[arg-type]
            )
        )
    return mirrors


def wait_listening(tcpdump: subprocess.Popen[bytes]) -> None:
    """Block until tcpdump says it captures (its first lines go to stderr)."""
    assert tcpdump.stderr is not None
    for _ in range(5):
        line = tcpdump.stderr.readline().decode()
        if "listening on" in line:
            return
    raise AssertionError(f"tcpdump did not start: {line}")


def nsenter(ns: Namespace, argv: Sequence[str]) -> subprocess.Popen[bytes]:
    """Start a process in `ns` as the direct child (nsenter execs; `ip netns exec` forks,
    so a signal to it would not reach the program, and waiting for it not wait for it)."""
    return subprocess.Popen(
        ["nsenter", f"--net=/var/run/netns/{ns.name}", *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def stop(proc: subprocess.Popen[bytes], how: signal.Signals = signal.SIGINT) -> bytes:
    """SIGINT (tcpdump flushes its file and reports drops) or `how`, then wait; what is
    left on its stderr pipe, which is then closed (as every pipe of it: an open pipe of
    an ended process is a ResourceWarning when collected, which fails a later test)."""
    proc.send_signal(how)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    left = proc.stderr.read() if proc.stderr is not None else b""
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()
    return left


# A TCP echo server on port 7000 of argv[1] (IPv4) and argv[2] (IPv6), one connection at a
# time per family: it prints "ready" once listening and serves until its stdin closes.
ECHO_PORT = 7000
ECHO_SERVER = f"""
import socket, sys, threading
def serve(family, address):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((address, {ECHO_PORT}))
    s.listen(128)
    while True:
        c, _ = s.accept()
        c.sendall(c.recv(100))
        c.close()
for family, address in ((socket.AF_INET, sys.argv[1]), (socket.AF_INET6, sys.argv[2])):
    threading.Thread(target=serve, args=(family, address), daemon=True).start()
print("ready", flush=True)
sys.stdin.read()
"""


@contextlib.contextmanager
def echo_server(ns: Namespace) -> Iterator[None]:
    """ECHO_SERVER on the source's addresses in `ns`, listening when the block starts and
    killed (its pipes closed) when it ends."""
    server = ns.popen(
        [sys.executable, "-c", ECHO_SERVER, SOURCE_IP, SOURCE_IP6],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert server.stdout is not None and server.stdout.readline() == b"ready\n"
        yield
    finally:
        stop(server, signal.SIGKILL)


# A sender run inside a namespace: many datagrams in one process (batching).
_SENDER = r"""
import json, socket, sys, time
for family, dst, sport, dport, size, count in json.loads(sys.argv[1]):
    fam = socket.AF_INET6 if family == 6 else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("::" if family == 6 else "0.0.0.0", sport))
    for _ in range(count):
        s.sendto(b"x" * size, (dst, dport))
    s.close()
time.sleep(0.05)
"""


@dataclass
class Lan:
    switch: Namespace
    test: Namespace
    source: Namespace
    target: Namespace
    dataplane: Dataplane
    workdir: Path

    def send_udp(
        self, sender: Namespace, datagrams: Sequence[tuple[int, str, int, int, int, int]]
    ) -> None:
        """(family, destination, source port, destination port, payload size, count)."""
        sender.run([sys.executable, "-c", _SENDER, json.dumps(list(datagrams))])

    @contextlib.contextmanager
    def capture(self) -> Iterator[list[Mirror]]:
        """Mirrors reaching the target while the block runs (filled in at its end)."""
        path = self.workdir / f"cap-{time.monotonic_ns()}.pcap"
        proc = nsenter(
            self.target,
            [
                "tcpdump",
                "-i",
                "eth0",
                "--immediate-mode",
                "-s",
                "2048",
                "-B",
                "16384",
                "-U",
                "-n",
                "-w",
                str(path),
                "udp port 4789",
            ],
        )
        result: list[Mirror] = []
        try:
            wait_listening(proc)
            yield result
            time.sleep(0.3)  # let the last mirrors arrive
        finally:
            report = stop(proc).decode()
        assert "\n0 packets dropped by kernel" in report, report
        result.extend(decode_pcap(path.read_bytes()))

    def target_vxlan_count(self) -> int:
        out = self.target.run(["nft", "-j", "list", "counter", "netdev", "sink", "vxlan"])
        return int(json.loads(out.stdout)["nftables"][1]["counter"]["packets"])


SINK = """
table netdev sink {
  counter vxlan {}
  chain in { type filter hook ingress device "eth0" priority 0; policy accept;
    udp dport 4789 counter name "vxlan" drop
    ip6 nexthdr udp udp dport 4789 counter name "vxlan" drop
  }
}
"""


def rule(
    id: str,
    priority: int,
    action: Action = Action.ACCEPT,
    *,
    direction: Direction = Direction.INGRESS,
    ethertype: EtherType = EtherType.IPV4,
    protocol: Protocol = Protocol.ALL,
    src: str | None = None,
    dst: str | None = None,
    sports: str | None = None,
    dports: str | None = None,
    filter_id: str = "f",
) -> Rule:
    return Rule(
        id=id,
        filter_id=filter_id,
        direction=direction,
        priority=priority,
        action=action,
        ethertype=ethertype,
        protocol=protocol,
        source_cidr=ipaddress.ip_network(src) if src else None,
        destination_cidr=ipaddress.ip_network(dst) if dst else None,
        source_ports=PortRange.parse(sports) if sports else None,
        destination_ports=PortRange.parse(dports) if dports else None,
    )


def session(
    id: str,
    filter_id: str,
    priority: int,
    *,
    vni: int = 1,
    packet_length: int = 96,
    enabled: bool = True,
    target: Port = TARGET_PORT,
    sources: tuple[str, ...] = (SOURCE_PORT.id,),
    group: str | None = None,
) -> Session:
    """A session to `target`, or with `group` to that target group (an `elb` session)."""
    return Session(
        id=id,
        name=id,
        filter_id=filter_id,
        sources=sources,
        target_id=target.id if group is None else group,
        target_kind=TargetKind.ENI if group is None else TargetKind.ELB,
        vni=vni,
        packet_length=packet_length,
        priority=priority,
        enabled=enabled,
    )


def state(
    filters: Sequence[Filter], sessions: Sequence[Session], revision: str = "1"
) -> DesiredState:
    return DesiredState(
        host="source",
        revision=revision,
        ports=(SOURCE_PORT,),
        sessions=tuple(sessions),
        filters=tuple(filters),
        targets=(TARGET_PORT, TARGET6_PORT),
    )
