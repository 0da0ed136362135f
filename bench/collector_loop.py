"""The collector's per-packet loop alone, on a synthetic ring block (no kernel, no root).

    .venv/bin/python bench/collector_loop.py [--size 64] [--reps 7]

Fills an anonymous mmap laid out like a TPACKET_V3 block (packet headers,
then outer IPv4/UDP/VXLAN + inner frame), and times `Collector._process_block`
on it with pcap output to a temporary directory, in CPU time (not disturbed by
other load), with the garbage collector as the real loop runs it (off).
Baseline side by side: the same block walked with only the two struct calls
per packet (the floor of any Python loop over the ring).
Prints packets per CPU-second, median of the repetitions.
"""

from __future__ import annotations

import argparse
import gc
import mmap
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from vxtap.collector import frames as f
from vxtap.collector.pcap import PcapStore
from vxtap.collector.ring import BLOCK_PACKETS, PACKET_HEADER
from vxtap.collector.run import FAST_IPV4, Collector, Options

BLOCK = 1 << 18  # as the collector's ring blocks
MAC = 80  # where the kernel puts the network header in a SOCK_DGRAM slot


class _Ring:
    def __init__(self, block: mmap.mmap) -> None:
        self.map = block


def fill(block: mmap.mmap, datagram: bytes) -> int:
    slot = (MAC + len(datagram) + 15) & ~15
    count = (BLOCK - 64) // slot
    pos = 64
    for i in range(count):
        PACKET_HEADER.pack_into(
            block, pos, slot, 1_700_000_000, i, len(datagram), len(datagram), 0, MAC
        )
        block[pos + MAC : pos + MAC + len(datagram)] = datagram
        pos += slot
    BLOCK_PACKETS.pack_into(block, 12, count, 64)
    return count


def floor(block: mmap.mmap, count: int) -> None:
    unpack_header, unpack_fast = PACKET_HEADER.unpack_from, FAST_IPV4.unpack_from
    pos = 64
    for _ in range(count):
        step, _sec, _nsec, _snaplen, _wire, _status, mac = unpack_header(block, pos)
        unpack_fast(block, pos + mac)
        pos += step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=64, help="inner frame bytes")
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args()
    inner = f.ethernet(
        f.ipv4(
            f.udp(b"b" * (args.size - 42), sport=1, dport=2),
            src="10.0.0.1",
            dst="10.0.0.2",
            protocol=17,
        ),
        src="02:00:00:00:00:01",
        dst="02:00:00:00:00:02",
        ethertype=0x0800,
    )
    datagram = f.datagram(inner, vni=1, src="10.78.0.1", dst="10.78.0.2")
    block = mmap.mmap(-1, BLOCK)
    collector = Collector(Options(output="none"))
    collector.ring = _Ring(block)  # type: ignore[assignment]
    with tempfile.TemporaryDirectory() as tmp:
        collector.pcap = PcapStore(Path(tmp))
        loop, base = [], []
        gc.disable()
        for _ in range(args.reps):
            count = fill(block, datagram)  # the loop overwrites headers: refill every time
            t = time.process_time()
            floor(block, count)
            base.append(count / (time.process_time() - t))
            t = time.process_time()
            collector._process_block(0)
            loop.append(count / (time.process_time() - t))
        gc.enable()
        collector.pcap.close()
    v, b = statistics.median(loop), statistics.median(base)
    print(f"inner {args.size} B, {count} packets per block, median of {args.reps}:")
    print(f"  collector loop (counters + pcap): {v / 1000:.0f} kpps per CPU-second")
    print(
        f"  floor (two struct calls only):    {b / 1000:.0f} kpps per CPU-second  ratio {v / b:.2f}"
    )


if __name__ == "__main__":
    main()
