"""Collector benchmark: highest zero-loss packet rate writing pcap, vxtap collect vs tcpdump -w.

    .venv/bin/python bench/collector.py [--seconds 1.5] [--sizes 64,1500] [--steps 6]

A sender namespace sends VXLAN datagrams (hand-built, sendmmsg batches of
identical datagrams, paced) over a veth into a receiver namespace, where either
`vxtap collect --pcap DIR --quiet` or `tcpdump -w FILE udp dst port 4789`
captures them. Both get a 64 MiB kernel ring (`--ring-mb 64` / `-B 65536`) and
the same UDP port holder (so the kernel sends no ICMP port unreachables).
A trial is lossless when the number of frames in the files equals the number
sent. For each frame size and tool a binary search finds the highest lossless
rate, between 0 and what the sender reaches on its own; trials of the two tools
alternate, so machine noise hits both. Results: median of the lossless rates
found per round (one round by default), printed as a Markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from vxtap.netns import Namespace, temporary_namespaces, veth  # noqa: E402
from vxtap.testing import frames as f  # noqa: E402

PY = sys.executable
FILL_RATE = 200_000  # drain runs fill the ring at a rate the path carries without loss
RING_MB = 8  # live trials: small enough that a slow consumer cannot hide behind the ring
SENDER, RECEIVER = "10.78.0.1", "10.78.0.2"


def inner_frame(size: int) -> bytes:
    """An Ethernet frame of exactly `size` bytes carrying UDP."""
    payload = b"b" * (size - 14 - 20 - 8)
    return f.ethernet(
        f.ipv4(f.udp(payload, sport=1000, dport=2000), src="10.0.0.1", dst="10.0.0.2", protocol=17),
        src="02:00:00:00:00:01",
        dst="02:00:00:00:00:02",
        ethertype=0x0800,
    )


# ------------------------------------------------------- the sender (runs in the namespace)


class _IOVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_void_p),
        ("namelen", ctypes.c_uint32),
        ("iov", ctypes.POINTER(_IOVec)),
        ("iovlen", ctypes.c_size_t),
        ("control", ctypes.c_void_p),
        ("controllen", ctypes.c_size_t),
        ("flags", ctypes.c_int),
    ]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("hdr", _MsgHdr), ("len", ctypes.c_uint)]


def send(size: int, rate: float, seconds: float, count: int = 0, batch: int = 256) -> None:
    """Send VXLAN datagrams at `rate` per second (0 = as fast as possible) for `seconds`
    or until `count` are sent; print the count."""
    libc = ctypes.CDLL(None, use_errno=True)
    payload = f.vxlan(inner_frame(size), vni=1)
    buf = ctypes.create_string_buffer(payload, len(payload))
    iov = _IOVec(ctypes.cast(buf, ctypes.c_void_p), len(payload))
    msgs = (_MMsgHdr * batch)()
    for m in msgs:
        m.hdr.iov = ctypes.pointer(iov)
        m.hdr.iovlen = 1
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
    s.connect((RECEIVER, 4789))
    sent = 0
    start = time.monotonic()
    end = start + seconds
    while True:
        now = time.monotonic()
        if now >= end or (count and sent >= count):
            break
        if rate:
            due = start + sent / rate
            if due > now:
                time.sleep(due - now)
        n = libc.sendmmsg(s.fileno(), msgs, min(batch, count - sent) if count else batch, 0)
        if n > 0:
            sent += n
    elapsed = time.monotonic() - start
    print(json.dumps({"sent": sent, "seconds": elapsed}))


# ---------------------------------------------------------------- the harness


@contextlib.contextmanager
def topology() -> Iterator[tuple[Namespace, Namespace]]:
    with temporary_namespaces("col-bs", "col-br") as (s, r):
        veth(s, "b0", r, "b1")
        for ns, dev, addr in ((s, "b0", SENDER), (r, "b1", RECEIVER)):
            ns.run(["ip", "addr", "add", f"{addr}/24", "dev", dev])
            ns.run(["ip", "link", "set", dev, "mtu", "1600"])  # 1500-byte inner + 50 outer
        yield s, r


def run_sender(
    s: Namespace, size: int, rate: float, seconds: float, count: int = 0
) -> tuple[int, float]:
    argv = [PY, str(Path(__file__).resolve()), "send", str(size), str(rate), str(seconds)]
    argv.append(str(count))
    out = s.run(argv, timeout=seconds + 30).stdout
    result = json.loads(out)
    return int(result["sent"]), float(result["seconds"])


def _wait_for(path: Path, text: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while text not in path.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"capture did not start: {path.read_text()}")
        time.sleep(0.05)


class Capture:
    """One capture tool running in the receiver namespace, writing to a scratch directory."""

    def __init__(self, tool: str, r: Namespace, ring_mb: int) -> None:
        self.tool = tool
        self.work = Path(tempfile.mkdtemp(prefix="vxtap-bench-"))
        self.err = self.work / "stderr.txt"
        self.holder: subprocess.Popen[bytes] | None = None
        with self.err.open("wb") as e:
            if tool == "vxtap":
                argv = [PY, "-m", "vxtap", "collect", "--pcap", str(self.work / "pcap"), "--quiet"]
                argv += ["--ring-mb", str(ring_mb), "--listen", f"{RECEIVER}:4789"]
            else:
                self.holder = r.popen([PY, "-c", HOLD_PORT], stdout=subprocess.DEVNULL)
                argv = ["tcpdump", "-Z", "root", "-i", "b1", "-n", "-B", str(ring_mb * 1024)]
                argv += ["-w", str(self.work / "tcpdump.pcap"), "udp dst port 4789"]
            self.proc = r.popen(argv, stdout=subprocess.DEVNULL, stderr=e)
        _wait_for(self.err, "listening on", self.proc)
        time.sleep(0.2)

    def written(self) -> int:
        return sum(p.stat().st_size for p in self.work.rglob("*.pcap"))

    def stop(self) -> int:
        """Stop it; the number of frames it wrote."""
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=120)
        text = self.err.read_text()
        if self.tool == "vxtap":
            line = next(x for x in text.splitlines() if x.startswith("pcap:"))
            return int(line.split()[1].replace(",", ""))
        line = next(x for x in text.splitlines() if "packets captured" in x)
        return int(line.split()[0])

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.holder is not None:
            self.holder.kill()
            self.holder.wait()
        shutil.rmtree(self.work, ignore_errors=True)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def drain(
    tool: str, s: Namespace, r: Namespace, size: int, count: int
) -> tuple[float, float] | None:
    """(packets per second, CPU microseconds per packet) of the tool emptying a full ring.

    Measures the consumer alone: the tool is stopped (SIGSTOP) while its ring
    fills, then timed from SIGCONT until its files stop growing. Needs a ring
    that holds `count` packets (checked). The CPU time per packet does not
    depend on how busy the rest of the machine is; the rate does.
    """
    ring_mb = 256
    cap = Capture(tool, r, ring_mb)
    try:
        os.kill(cap.proc.pid, signal.SIGSTOP)
        sent, _ = run_sender(s, size, FILL_RATE, 60, count)
        time.sleep(0.2)
        cpu_start = cpu_seconds(cap.proc.pid)
        start = time.monotonic()
        os.kill(cap.proc.pid, signal.SIGCONT)
        # Done when the files stop growing (tcpdump keeps its last stdio buffer until exit).
        size_seen, last_growth = 0, start
        while time.monotonic() - last_growth < 0.3:
            now_size = cap.written()
            if now_size != size_seen:
                size_seen, last_growth = now_size, time.monotonic()
            time.sleep(0.002)
        cpu = cpu_seconds(cap.proc.pid) - cpu_start
        got = cap.stop()
        if got < 0.99 * sent:  # lost on the way in (a loaded machine): not a drain figure
            print(f"{tool}: drain run void, {got} of {sent} arrived", file=sys.stderr)
            return None
        return got / (last_growth - start), cpu / got * 1e6
    finally:
        cap.close()


def trial(
    tool: str, s: Namespace, r: Namespace, size: int, rate: float, seconds: float
) -> tuple[int, int]:
    """(sent, frames in the files) for one live run of `tool` at `rate`."""
    cap = Capture(tool, r, RING_MB)
    try:
        sent, _ = run_sender(s, size, rate, seconds)
        # The rings drain; tcpdump's libpcap retires a partly filled block only after its
        # 1 s timeout, and stopping it earlier would lose that block.
        time.sleep(1.5)
        return sent, cap.stop()
    finally:
        cap.close()


HOLD_PORT = f"""
import sys, time
sys.path.insert(0, {str(ROOT / "src")!r})
from vxtap.collector.ring import PortHolder, parse_listen
h = PortHolder(parse_listen("{RECEIVER}:4789"))
time.sleep(3600)
"""


def search(
    s: Namespace, r: Namespace, size: int, ceiling: float, seconds: float, steps: int
) -> dict[str, tuple[float, list[str], bool]]:
    """Highest lossless rate per tool: first at the sender's ceiling, then bisect.

    The tools alternate trial by trial, so machine noise hits both alike.
    """
    tools = ("vxtap", "tcpdump")
    lo = dict.fromkeys(tools, 0.0)
    hi = dict.fromkeys(tools, ceiling)
    done = dict.fromkeys(tools, False)
    log: dict[str, list[str]] = {tool: [] for tool in tools}
    for step in range(steps):
        for tool in tools:
            if done[tool]:
                continue
            rate = hi[tool] if step == 0 else (lo[tool] + hi[tool]) / 2
            sent, got = trial(tool, s, r, size, rate, seconds)
            achieved = sent / seconds
            ok = got >= sent
            log[tool].append(f"{achieved / 1000:.0f}k:{'ok' if ok else f'lost {sent - got}'}")
            if ok:
                lo[tool] = max(lo[tool], achieved)
                done[tool] = step == 0  # lossless at the ceiling: nothing higher to find
            else:
                hi[tool] = rate
    # Lossless already at the first trial: the sender, not the tool, set the limit.
    return {tool: (lo[tool], log[tool], done[tool]) for tool in tools}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=1.5, help="length of a live trial")
    parser.add_argument("--sizes", default="64,1500", help="inner frame sizes, bytes")
    parser.add_argument("--steps", type=int, default=5, help="bisection steps per tool")
    parser.add_argument("--drains", type=int, default=5, help="drain runs per tool (median)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (network namespaces)")
    rows = []
    with topology() as (s, r):
        for size in (int(x) for x in args.sizes.split(",")):
            # The sender's own ceiling, with only a port holder on the receiver.
            holder = r.popen([PY, "-c", HOLD_PORT], stdout=subprocess.DEVNULL)
            try:
                time.sleep(0.5)
                sent, secs = run_sender(s, size, 0, args.seconds)
            finally:
                holder.kill()
                holder.wait()
            ceiling = sent / secs
            found = search(s, r, size, ceiling, args.seconds, args.steps)
            for tool, (_rate, log, _bound) in found.items():
                print(f"{size} B {tool} live trials: {' '.join(log)}", file=sys.stderr)
            count = 200_000 if size <= 256 else 60_000
            drains: dict[str, list[float]] = {"vxtap": [], "tcpdump": []}
            cpus: dict[str, list[float]] = {"vxtap": [], "tcpdump": []}
            for _ in range(args.drains):
                for tool in drains:
                    result = drain(tool, s, r, size, count)
                    if result is not None:
                        drains[tool].append(result[0])
                        cpus[tool].append(result[1])
            for tool, values in drains.items():
                text = " ".join(
                    f"{v / 1000:.0f}k/{c:.2f}us" for v, c in zip(values, cpus[tool], strict=True)
                )
                print(f"{size} B {tool} drain runs (rate/CPU per packet): {text}", file=sys.stderr)
            rows.append(
                (
                    size,
                    ceiling,
                    found["vxtap"],
                    found["tcpdump"],
                    statistics.median(drains["vxtap"]),
                    statistics.median(drains["tcpdump"]),
                    statistics.median(cpus["vxtap"]),
                    statistics.median(cpus["tcpdump"]),
                )
            )
    print(
        "| inner frame | sender alone | live lossless: vxtap | live lossless: tcpdump | ratio "
        "| drain: vxtap | drain: tcpdump | ratio | CPU/packet: vxtap | CPU/packet: tcpdump "
        "| one-core capacity ratio |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for size, ceiling, (lv, _, vb), (lt, _, tb), dv, dt, cv, ct in rows:
        live_ratio = f"{lv / lt:.2f}" if lt and not (vb and tb) else "n/a (both sender-bound)"
        print(
            f"| {size} B | {ceiling / 1000:.0f} kpps | {_live(lv, vb)} | {_live(lt, tb)}"
            f" | {live_ratio} | {dv / 1000:.0f} kpps | {dt / 1000:.0f} kpps | {dv / dt:.2f}"
            f" | {cv:.2f} µs | {ct:.2f} µs | {ct / cv:.2f} |"
        )


def _live(rate: float, sender_bound: bool) -> str:
    return f"≥ {rate / 1000:.0f} kpps (sender limit)" if sender_bound else f"{rate / 1000:.0f} kpps"


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "send":
        send(int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]))
    else:
        main()
