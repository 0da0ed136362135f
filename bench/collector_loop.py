"""The collector's per-block work alone, on a synthetic ring block (no kernel, no root).

    .venv/bin/python bench/collector_loop.py [--size 64] [--reps 21]

Lays out a 256 KiB TPACKET_V3 block as the collector's ring has them
(`frames.ring_block`: packet headers, then outer IPv4/UDP/VXLAN + inner frame)
and times `Collector._process_block` on it with pcap output to a temporary
directory, in CPU time (not disturbed by other load). Side by side, the floor
of any Python loop over the ring: the same block walked with only two struct
calls per packet (what the collector's loop did at the least before it was
compiled). Prints packets per CPU-second, median of the repetitions.
"""

from __future__ import annotations

import argparse
import mmap
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from vxtap.collector.blockscan import BlockScan, as_array
from vxtap.collector.pcap import PcapStore
from vxtap.collector.ring import PACKET_HEADER
from vxtap.collector.run import Collector, Options
from vxtap.testing import frames as f

BLOCK = 1 << 18  # as the collector's ring blocks
# Outer IPv4 + UDP + VXLAN + inner Ethernet + inner IPv4 length in one call.
OUTER = struct.Struct("!BxHxxH4x4s12xB3xI12xHBxH")


class _Ring:
    def __init__(self, block: mmap.mmap) -> None:
        self.map = block


def floor(block: mmap.mmap, count: int) -> None:
    unpack_header, unpack_outer = PACKET_HEADER.unpack_from, OUTER.unpack_from
    pos = 64
    for _ in range(count):
        step, _sec, _nsec, _snaplen, _wire, _status, mac = unpack_header(block, pos)
        unpack_outer(block, pos + mac)
        pos += step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=64, help="inner frame bytes")
    parser.add_argument("--reps", type=int, default=21)
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
    slot = (80 + len(datagram) + 15) & ~15
    count = (BLOCK - 64) // slot
    block = mmap.mmap(-1, BLOCK)
    block[:] = f.ring_block([datagram] * count, size=BLOCK)
    collector = Collector(Options(output="none"))
    collector.ring = _Ring(block)  # type: ignore[assignment]
    collector.scan = BlockScan(BLOCK)
    collector.scan.warm_up()
    collector.ring_bytes = as_array(block)
    with tempfile.TemporaryDirectory() as tmp:
        collector.pcap = PcapStore(Path(tmp))
        loop, base = [], []
        for _ in range(args.reps):
            t = time.process_time()
            floor(block, count)
            base.append(count / (time.process_time() - t))
            t = time.process_time()
            collector._process_block(0)
            loop.append(count / (time.process_time() - t))
        collector.pcap.close()
    v, b = statistics.median(loop), statistics.median(base)
    print(f"inner {args.size} B, {count} packets per block, median of {args.reps}:")
    print(f"  collector (counters + pcap):   {v / 1000:.0f} kpps per CPU-second")
    print(f"  floor of a Python loop:        {b / 1000:.0f} kpps per CPU-second  ratio {v / b:.2f}")


if __name__ == "__main__":
    main()
