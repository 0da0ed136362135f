"""`vxtap collect` end to end: kernel-built and hand-built VXLAN from a sender
namespace into the collector in a receiver namespace."""

from __future__ import annotations

import json
import os
import re
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from vxtap.netns import Namespace, veth
from vxtap.testing import frames as f
from vxtap.testing.pcap import tshark

pytestmark = pytest.mark.netns

SENDER4, RECEIVER4 = "10.77.0.1", "10.77.0.2"
SENDER6, RECEIVER6 = "fd77::1", "fd77::2"
PY = sys.executable

# Sends hex-encoded UDP payloads (JSON on stdin) to (address, port) from the sender namespace.
SEND = """
import json, socket, sys, time
dst, port, repeat, rate = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
payloads = [bytes.fromhex(h) for h in json.load(sys.stdin)]
s = socket.socket(socket.AF_INET6 if ":" in dst else socket.AF_INET, socket.SOCK_DGRAM)
start = time.monotonic()
for i in range(repeat):
    for p in payloads:
        s.sendto(p, (dst, port))
    if rate:
        time.sleep(max(0.0, start + (i + 1) / rate - time.monotonic()))
"""


@dataclass
class Lab:
    sender: Namespace
    receiver: Namespace
    tmp: Path

    def send(self, payloads: list[bytes], *, dst: str = RECEIVER4, repeat: int = 1) -> None:
        argv = [PY, "-c", SEND, dst, "4789", str(repeat), "0"]
        self.sender.run(argv, input=json.dumps([p.hex() for p in payloads]))

    def ping(self, address: str, count: int = 3) -> None:
        argv = ["ping", "-n", "-q", "-c", str(count), "-i", "0.05", "-W", "0.2", address]
        self.sender.run(argv, check=False)

    def collect(self, *args: str, wrapper: Sequence[str] = ()) -> Collecting:
        return Collecting(self.receiver, list(args), self.tmp, wrapper)


class Collecting:
    """A `vxtap collect` process in the receiver namespace, stdout/stderr to files."""

    def __init__(
        self, ns: Namespace, args: list[str], tmp: Path, wrapper: Sequence[str] = ()
    ) -> None:
        self.out_path = tmp / f"out-{time.monotonic_ns()}.txt"
        self.err_path = self.out_path.with_suffix(".err")
        argv = [*wrapper, PY, "-m", "vxtap", "collect", *args]
        with self.out_path.open("wb") as out, self.err_path.open("wb") as err:
            self.proc = ns.popen(argv, stdout=out, stderr=err)
        wait_for(lambda: "listening on" in self.stderr() or self.proc.poll() is not None)
        assert self.proc.poll() is None, self.stderr()

    def stdout(self) -> str:
        return self.out_path.read_text()

    def stderr(self) -> str:
        return self.err_path.read_text()

    def stop(self, sig: int = signal.SIGTERM) -> tuple[str, str]:
        self.proc.send_signal(sig)
        self.proc.wait(timeout=20)
        return self.stdout(), self.stderr()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def wait_for(condition: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


@pytest.fixture
def lab(make_namespace: Callable[[str], Namespace], tmp_path: Path) -> Iterator[Lab]:
    s, r = make_namespace("col-s"), make_namespace("col-r")
    veth(s, "u0", r, "u1")
    for ns, dev, v4, v6 in ((s, "u0", SENDER4, SENDER6), (r, "u1", RECEIVER4, RECEIVER6)):
        ns.run(["ip", "addr", "add", f"{v4}/24", "dev", dev])
        ns.run(["ip", "-6", "addr", "add", f"{v6}/64", "dev", dev, "nodad"])
    # Kernel VXLAN in the sender: VNI 7 over IPv4, VNI 8 over IPv6. IPv6 is off on the
    # VXLAN devices (their own solicitations would be extra packets), static neighbours
    # so that inner traffic needs no ARP.
    devices = (
        ("vx4", "7", SENDER4, RECEIVER4, "10.99.7"),
        ("vx6", "8", SENDER6, RECEIVER6, "10.99.8"),
    )
    for name, vni, local, remote, net in devices:
        vxlan = ["type", "vxlan", "id", vni, "dstport", "4789", "local", local, "remote", remote]
        s.run(["ip", "link", "add", name, *vxlan, "nolearning"])
        s.run(["sysctl", "-q", "-w", f"net.ipv6.conf.{name}.disable_ipv6=1"])
        s.run(["ip", "addr", "add", f"{net}.1/24", "dev", name])
        s.run(["ip", "link", "set", name, "address", f"02:00:00:00:0{vni}:01", "up"])
        s.run(["ip", "neigh", "add", f"{net}.2", "lladdr", f"02:00:00:00:0{vni}:02", "dev", name])
    running: list[Collecting] = []
    lab = Lab(s, r, tmp_path)
    original = lab.collect

    def collect(*args: str, wrapper: Sequence[str] = ()) -> Collecting:
        c = original(*args, wrapper=wrapper)
        running.append(c)
        return c

    lab.collect = collect  # type: ignore[method-assign]
    try:
        yield lab
    finally:
        for c in running:
            c.kill()


def inner_ipv4(payload: bytes, protocol: int, vni: int = 9) -> bytes:
    return f.ethernet(
        f.ipv4(payload, src="192.168.0.161", dst="192.168.0.230", protocol=protocol),
        src="fa:16:3e:7e:d6:77",
        dst="fa:16:3e:7e:d6:bc",
        ethertype=0x0800,
    )


LONG_TCP = inner_ipv4(f.tcp(b"d" * 1400, sport=38944, dport=1234, seq=1000, ack=5, flags=0x18), 6)
IPV6_SYN = f.ethernet(
    f.ipv6(
        f.tcp(sport=40000, dport=443, seq=1, flags=0x02),
        src="2001:db8::1",
        dst="2001:db8::2",
        next_header=6,
    ),
    src="02:00:00:00:00:01",
    dst="02:00:00:00:00:02",
    ethertype=0x86DD,
)


def metrics(ns: Namespace, port: int) -> dict[str, float]:
    text = ns.run(["curl", "-sf", f"http://127.0.0.1:{port}/metrics"]).stdout
    values: dict[str, float] = {}
    for row in text.splitlines():
        if row and not row.startswith("#"):
            name, value = row.rsplit(" ", 1)
            values[name] = float(value)
    return values


def test_json_counters_metrics_and_pcap(lab: Lab) -> None:
    pcap = lab.tmp / "pcap"
    c = lab.collect("--json", "--pcap", str(pcap), "--metrics", "127.0.0.1:9477")
    # The start line is one line however long the pcap path (stderr is not a terminal).
    assert f"pcap to {pcap}, metrics at http://127.0.0.1:9477/metrics\n" in c.stderr()
    lab.ping("10.99.7.2", 3)  # kernel VXLAN, IPv4 outer, VNI 7
    lab.ping("10.99.8.2", 2)  # kernel VXLAN, IPv6 outer, VNI 8
    good = [f.vxlan(f.cut(LONG_TCP, 96), vni=9), f.vxlan(IPV6_SYN, vni=9)]
    bad_inner = f.vxlan(
        f.ethernet(b"\x45\x00", src="02:00:00:00:00:01", dst="02:00:00:00:00:02", ethertype=0x0800),
        vni=9,
    )
    malformed = [
        b"\x08\x00\x00",  # too short for a VXLAN header
        f.vxlan(LONG_TCP[:60], vni=9, flags=0x00),  # I flag missing
        bytes.fromhex("abcd01000001000000000000")
        + b"\x07example\x03com\x00\x00\x01\x00\x01",  # DNS
        f.vxlan(b"\x02\x00\x00\x00\x00\x01", vni=9),  # inner frame of 6 bytes
        f.vxlan(inner_ipv4(b"z" * 3000, 17), vni=9),  # outer datagram fragmented by the sender
    ]
    lab.send([*good, bad_inner, *malformed])
    lab.send([f.vxlan(IPV6_SYN, vni=10)], dst=RECEIVER6)  # hand-built, IPv6 outer
    wait_for(lambda: len(c.stdout().splitlines()) >= 14)

    m = metrics(lab.receiver, 9477)
    assert m['vxtap_collector_packets_total{source="10.77.0.1",vni="7"}'] == 3
    assert m['vxtap_collector_packets_total{source="fd77::1",vni="8"}'] == 2
    assert m['vxtap_collector_packets_total{source="fd77::1",vni="10"}'] == 1
    assert m['vxtap_collector_packets_total{source="10.77.0.1",vni="9"}'] == 4
    assert m['vxtap_collector_truncated_total{source="10.77.0.1",vni="9"}'] == 1
    assert (
        m['vxtap_collector_malformed_total{source="10.77.0.1",vni="9"}'] == 2
    )  # bad inner + 6 bytes
    assert m['vxtap_collector_malformed_total{source="10.77.0.1",vni="none"}'] == 4
    assert m['vxtap_collector_bytes_total{source="10.77.0.1",vni="7"}'] == 3 * 98
    assert m["vxtap_collector_ring_dropped_total"] == 0

    out, err = c.stop()
    objs = [json.loads(row) for row in out.splitlines()]
    assert len(objs) == 14
    by_vni: dict[object, list[dict[str, object]]] = {}
    for o in objs:
        by_vni.setdefault(o["vni"], []).append(o)
    pings = by_vni[7]
    assert [o["icmp"]["seq"] for o in pings] == [1, 2, 3]  # type: ignore[index]
    assert pings[0]["outer"]["src"] == SENDER4 and pings[0]["ip"]["dst"] == "10.99.7.2"  # type: ignore[index]
    assert {o["outer"]["src"] for o in by_vni[8]} == {SENDER6}  # type: ignore[index]
    trunc = next(o for o in by_vni[9] if o["truncated"])
    assert (trunc["captured"], trunc["length"]) == (96, len(LONG_TCP))
    assert trunc["tcp"]["payload_length"] == 1400  # type: ignore[index]
    reasons = sorted(str(o["malformed"]) for o in objs if o["malformed"])
    assert len(reasons) == 6
    for expected in (
        "no VXLAN header",
        "flags 0x00",
        "flags 0xab",
        "6 bytes",
        "fragmented",
        "IPv4 header cut",
    ):
        assert any(expected in r for r in reasons), (expected, reasons)
    assert "summary" in err and "0 dropped" in err

    files = {p.name.split("-")[0]: p for p in pcap.iterdir()}
    assert sorted(files) == ["vni10", "vni7", "vni8", "vni9"]
    rows = tshark(files["vni7"], "ip.src", "ip.dst", "icmp.seq", "frame.len", "frame.cap_len")
    assert rows == [["10.99.7.1", "10.99.7.2", str(i), "98", "98"] for i in (1, 2, 3)]
    assert len(tshark(files["vni8"], "icmp.seq")) == 2
    rows = tshark(files["vni9"], "frame.len", "frame.cap_len", "ipv6.dst", "tcp.flags.syn")
    assert [r[:2] for r in rows] == [[str(len(LONG_TCP)), "96"], ["74", "74"], ["16", "16"]]
    assert rows[1][2:] == ["2001:db8::2", "1"]
    dump = subprocess.run(
        ["tcpdump", "-nn", "-r", str(files["vni9"])], capture_output=True, text=True, check=True
    )
    assert (
        "192.168.0.161.38944 > 192.168.0.230.1234: Flags [P.], seq 1000:2400, ack 5" in dump.stdout
    )
    assert "2001:db8::1.40000 > 2001:db8::2.443: Flags [S]" in dump.stdout


def test_lines_match_tcpdump_and_vni_filter(lab: Lab) -> None:
    capture = lab.tmp / "wire.pcap"
    dump = lab.receiver.popen(
        [
            "tcpdump",
            "-Z",
            "root",
            "--immediate-mode",
            "-i",
            "u1",
            "-U",
            "-w",
            str(capture),
            "udp port 4789",
        ],
        stderr=subprocess.DEVNULL,
    )
    try:
        c = lab.collect("--vni", "7")
        # Kernel-built TCP: a SYN (and its retransmission) that nobody answers.
        lab.sender.run(["nc", "-z", "-w", "1", "10.99.7.2", "1234"], check=False)
        lab.ping("10.99.8.2", 2)  # VNI 8: counted, not shown
        wait_for(lambda: len(c.stdout().splitlines()) >= 1)
        time.sleep(0.3)
        out, err = c.stop()
    finally:
        dump.terminate()
        dump.wait()
    lines = out.splitlines()
    assert all(" vni 7: " in row for row in lines)
    pattern = (
        r"\d\d:\d\d:\d\d\.\d{6} 10\.77\.0\.1\.\d+ > 10\.77\.0\.2\.4789: "
        r"VXLAN, flags \[I\] \(0x08\), "
        r"vni 7: 02:00:00:00:07:01 > 02:00:00:00:07:02, ethertype IPv4 \(0x0800\), length 74: "
        r"10\.99\.7\.1\.\d+ > 10\.99\.7\.2\.1234: Flags \[S\], seq \d+, win \d+, "
        r"options \[mss \d+,sackOK,TS val \d+ ecr 0,nop,wscale \d+\], length 0"
    )
    assert re.fullmatch(pattern, lines[0]), lines[0]
    # The inner part reads exactly as tcpdump -nne decodes the same packets on the wire.
    theirs = subprocess.run(
        ["tcpdump", "-nne", "-r", str(capture), "udp port 4789 and ip"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    # This tcpdump prints the inner frame on the line after "... vni 7".
    rows = theirs.splitlines()
    tcpdump_inner = [rows[i + 1] for i, row in enumerate(rows[:-1]) if row.endswith("vni 7")]
    ours = [row.split("vni 7: ", 1)[1] for row in lines]
    assert ours == tcpdump_inner[: len(ours)]
    # VNI 8 (IPv6 outer) was filtered from the output but is in the summary.
    assert re.search(r"│\s+8 │ fd77::1\s+│\s+2 │", err), err


def read_records(path: Path) -> tuple[int, int]:
    """(whole records, bytes left after them) of a pcap file."""
    data = path.read_bytes()
    pos, count = 24, 0
    while pos + 16 <= len(data):
        caplen = struct.unpack_from("<I", data, pos + 8)[0]
        if pos + 16 + caplen > len(data):
            break
        pos += 16 + caplen
        count += 1
    return count, len(data) - pos


def test_rotation_and_sigkill_leave_whole_files(lab: Lab) -> None:
    pcap = lab.tmp / "pcap"
    c = lab.collect("--pcap", str(pcap), "--rotate-size", "20k")
    frame = inner_ipv4(f.udp(b"u" * 172, sport=1, dport=2), 17)  # 214 bytes, 230 per record
    payload = json.dumps([f.vxlan(frame, vni=3).hex()])
    argv = [PY, "-c", SEND, RECEIVER4, "4789", "100000", "20000"]
    sender = lab.sender.popen(argv, stdin=subprocess.PIPE)
    assert sender.stdin is not None
    sender.stdin.write(payload.encode())
    sender.stdin.close()
    try:
        wait_for(lambda: pcap.exists() and len(list(pcap.iterdir())) >= 4)
        c.stop(signal.SIGKILL)  # while traffic flows
    finally:
        sender.kill()
        sender.wait()
    files = sorted(pcap.iterdir())
    *completed, last = files
    for path in completed:
        assert path.stat().st_size <= 20 * 1024
        assert read_records(path) == ((20 * 1024 - 24) // 230, 0)
        result = subprocess.run(["tcpdump", "-nn", "-r", str(path)], capture_output=True, text=True)
        assert result.returncode == 0 and "truncated" not in result.stderr
    whole, left = read_records(last)
    assert left < 230  # at most the last record is partial
    if whole:
        assert len(tshark(last, "frame.len")) == whole


def test_decap_interface_carries_inner_frames_and_goes_away(lab: Lab) -> None:
    c = lab.collect("--decap", "--quiet")
    lab.ping("10.99.7.2", 1)  # first sight of VNI 7 creates vxtap-vni7
    wait_for(
        lambda: lab.receiver.run(["ip", "link", "show", "vxtap-vni7"], check=False).returncode == 0
    )
    dump = lab.receiver.popen(
        ["tcpdump", "-i", "vxtap-vni7", "-nne", "-l", "-c", "3", "icmp"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        time.sleep(1.0)  # tcpdump attaches
        lab.ping("10.99.7.2", 3)
        out, _ = dump.communicate(timeout=20)
    finally:
        if dump.poll() is None:
            dump.kill()
            dump.wait()
    lines = out.decode().splitlines()
    assert len(lines) == 3
    assert all(
        "02:00:00:00:07:01 > 02:00:00:00:07:02, ethertype IPv4 (0x0800), length 98: "
        "10.99.7.1 > 10.99.7.2: ICMP echo request" in row
        for row in lines
    )
    link = lab.receiver.run(["ip", "-d", "link", "show", "vxtap-vni7"]).stdout
    assert "vxlan id 7" in link and "dstport 4789" in link
    c.stop()
    assert lab.receiver.run(["ip", "link", "show", "vxtap-vni7"], check=False).returncode != 0


def test_host_loss_is_counted(lab: Lab) -> None:
    c = lab.collect("--quiet", "--ring-mb", "2")
    os.kill(c.proc.pid, signal.SIGSTOP)  # the collector stops reading; the ring fills up
    try:
        lab.send([f.vxlan(LONG_TCP, vni=4)], repeat=5000)
    finally:
        os.kill(c.proc.pid, signal.SIGCONT)
    time.sleep(0.5)
    _, err = c.stop()
    found = re.search(r"kernel ring: ([\d,]+) received, ([\d,]+) dropped", err)
    assert found, err
    received, dropped = (int(g.replace(",", "")) for g in found.groups())
    assert dropped > 0 and received > 0
    # Every datagram is accounted for: in the ring or counted as dropped there (a loaded
    # machine may, rarely, lose a few before they reach the ring at all).
    assert 4900 <= received + dropped <= 5000
    assert re.search(rf"│\s+4 │ 10\.77\.0\.1\s+│\s+{received:,} │", err), err


def test_bad_options_fail_with_a_clear_message(lab: Lab) -> None:
    argv = [PY, "-m", "vxtap", "collect"]
    for args, message in (
        (["--listen", "1.2.3:4789"], "is not an IP address"),
        (["--listen", "*:70000"], "outside 1-65535"),
        (["--rotate-size", "lots"], "is not a size"),
        (["--interface", "nope0"], "interface 'nope0' does not exist"),
        (["--metrics", "localhost"], "expected ADDR:PORT"),
    ):
        result = lab.receiver.run([*argv, *args], check=False)
        assert result.returncode != 0 and message in result.stderr, (args, result.stderr)


def test_stats_view_replaces_per_packet_lines(lab: Lab) -> None:
    c = lab.collect("--stats")
    lab.ping("10.99.7.2", 3)
    time.sleep(1.5)  # at least one refresh
    out, err = c.stop()
    assert out == ""
    assert "vxtap collect" in err
    assert re.search(r"│\s+7 │ 10\.77\.0\.1\s+│\s+3 │\s+294 │", err), err


def test_decap_over_ipv6_for_listed_vnis(lab: Lab) -> None:
    c = lab.collect("--decap", "--quiet", "--listen", "[::]:4789", "--vni", "8")
    link = lab.receiver.run(["ip", "-d", "link", "show", "vxtap-vni8"]).stdout  # made at start
    assert "vxlan id 8" in link and "dstport 4789" in link
    argv = ["tcpdump", "-i", "vxtap-vni8", "-nne", "-l", "-c", "2", "icmp"]
    dump = lab.receiver.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        time.sleep(1.0)  # tcpdump attaches
        lab.ping("10.99.8.2", 2)  # kernel VXLAN over IPv6
        out, _ = dump.communicate(timeout=20)
    finally:
        if dump.poll() is None:
            dump.kill()
            dump.wait()
    assert out.decode().count("10.99.8.1 > 10.99.8.2: ICMP echo request") == 2
    c.stop()
    assert lab.receiver.run(["ip", "link", "show", "vxtap-vni8"], check=False).returncode != 0


def test_decap_refuses_a_port_owned_by_another_program(lab: Lab) -> None:
    holder = lab.receiver.popen(
        [
            PY,
            "-c",
            "import socket, time; s = socket.socket(2, 2); s.bind(('0.0.0.0', 4789));"
            " print('ok', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"ok\n"
        argv = [PY, "-m", "vxtap", "collect", "--decap", "--vni", "5"]
        result = lab.receiver.run(argv, check=False)
        assert result.returncode != 0
        assert "cannot bring up vxtap-vni5" in result.stderr and "port 4789" in result.stderr
        # Nothing left behind.
        assert lab.receiver.run(["ip", "link", "show", "vxtap-vni5"], check=False).returncode != 0
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()  # an open pipe is a ResourceWarning


def test_listen_address_selects_datagrams(lab: Lab) -> None:
    c = lab.collect("--json", "--listen", f"{RECEIVER6}")
    lab.send([f.vxlan(IPV6_SYN, vni=11)])  # to the IPv4 address: not for us
    lab.send([f.vxlan(IPV6_SYN, vni=12)], dst=RECEIVER6)
    wait_for(lambda: len(c.stdout().splitlines()) >= 1)
    time.sleep(0.3)
    out, _ = c.stop()
    assert [json.loads(row)["vni"] for row in out.splitlines()] == [12]


def test_failed_start_leaves_nothing_behind(lab: Lab) -> None:
    c = lab.collect("--quiet", "--metrics", "127.0.0.1:9478")
    try:
        argv = [PY, "-m", "vxtap", "collect", "--decap", "--vni", "6"]
        argv += ["--metrics", "127.0.0.1:9478", "--pcap", str(lab.tmp / "never")]
        result = lab.receiver.run(argv, check=False)
        assert result.returncode != 0
        assert "--metrics 127.0.0.1:9478: Address already in use" in result.stderr
        assert lab.receiver.run(["ip", "link", "show", "vxtap-vni6"], check=False).returncode != 0
        assert not (lab.tmp / "never").exists()
    finally:
        c.stop()


def test_a_vni_without_decap_interface_does_not_stop_it(lab: Lab) -> None:
    # The host already has its own VXLAN device for VNI 7: ours cannot exist.
    own = ["ip", "link", "add", "own7", "type", "vxlan", "id", "7", "dstport", "4789"]
    lab.receiver.run([*own, "local", RECEIVER4, "nolearning"])
    c = lab.collect("--decap")
    lab.ping("10.99.7.2", 2)
    wait_for(lambda: "goes on without one" in c.stderr())
    lab.ping("10.99.7.2", 1)
    wait_for(lambda: len(c.stdout().splitlines()) >= 3)
    _, err = c.stop()
    assert "cannot create decap interface vxtap-vni7 for VNI 7" in err
    assert re.search(r"│\s+7 │ 10\.77\.0\.1\s+│\s+3 │", err), err
    assert lab.receiver.run(["ip", "link", "show", "vxtap-vni7"], check=False).returncode != 0


def test_thousands_of_vnis_under_a_low_file_limit(lab: Lab) -> None:
    # One datagram on each of ~1,015 VNIs used to end the collector with "Too many open
    # files". Here 2,000 VNIs, twice, under a limit of 96 descriptors: it keeps at most
    # 48 files open, continues each VNI's file when it comes back, stores the first
    # 1,500 VNIs (--pcap-max-vnis) and counts the rest, and folds the counter series
    # beyond --max-series into "other".
    vnis, stored_vnis, rounds = 2000, 1500, 2
    pcap = lab.tmp / "pcap"
    c = lab.collect(
        "--pcap", str(pcap), "--pcap-max-vnis", str(stored_vnis), "--max-series", "500",
        "--metrics", "127.0.0.1:9479", wrapper=("prlimit", "--nofile=96:96", "--"),
    )  # fmt: skip
    frame = inner_ipv4(f.udp(b"v" * 18, sport=1, dport=2), 17)
    for _ in range(rounds):
        lab.send([f.vxlan(frame, vni=vni) for vni in range(1, vnis + 1)])
    total = vnis * rounds

    def handled() -> float:
        try:
            m = metrics(lab.receiver, 9479)
        except subprocess.CalledProcessError:
            c.proc.wait(timeout=5)  # not answering: it ended
            raise AssertionError(f"the collector ended: {c.stderr()}") from None
        return m["vxtap_collector_pcap_records_total"] + m["vxtap_collector_pcap_unstored_total"]

    wait_for(lambda: handled() == total)
    m = metrics(lab.receiver, 9479)
    assert m["vxtap_collector_pcap_records_total"] == stored_vnis * rounds
    assert m["vxtap_collector_pcap_unstored_total"] == (vnis - stored_vnis) * rounds
    shown = sum(v for k, v in m.items() if k.startswith("vxtap_collector_packets_total{"))
    assert shown == total
    assert (
        m['vxtap_collector_packets_total{source="other",vni="other"}']
        == m["vxtap_collector_folded_total"]
        == total - 500 * rounds
    )  # the first 500 VNIs have their own series
    assert m["vxtap_collector_pcap_open_files"] <= 48
    assert m["vxtap_collector_pcap_files_closed_total"] >= stored_vnis * rounds - 48 * 2
    _, err = c.stop()
    assert c.proc.returncode == 0, err
    assert "Too many open files" not in err
    assert "further VNIs (first: 1501) are counted, not stored" in err
    assert f"{(vnis - stored_vnis) * rounds:,} frames not stored (VNI limit)" in err
    assert f"{total - 500 * rounds:,} datagrams folded into 'other' (series limit 500)" in err
    # One file per VNI, continued when the VNI came back: every file holds both rounds,
    # and the Wireshark and tcpdump readers read them whole.
    files = sorted(pcap.iterdir())
    assert len(files) == stored_vnis
    assert {p.name.split("-")[0] for p in files} == {f"vni{v}" for v in range(1, stored_vnis + 1)}
    counts = subprocess.run(
        ["capinfos", "-c", "-M", "-T", "-r", *map(str, files)],
        capture_output=True, text=True, check=True, timeout=120,
    ).stdout.splitlines()  # fmt: skip
    assert len(counts) == stored_vnis and all(row.split("\t")[1] == str(rounds) for row in counts)
    for path in files[:: stored_vnis // 10]:
        dump = subprocess.run(["tcpdump", "-nn", "-r", str(path)], capture_output=True, text=True)
        assert dump.returncode == 0 and "truncated" not in dump.stderr, dump.stderr
        assert dump.stdout.count("192.168.0.161.1 > 192.168.0.230.2: UDP") == rounds
