"""Counters per VNI and outer source, plus the host loss the kernel reports.

The receive loop increments plain lists (the cheapest thing per packet in
Python) while holding `lock` for a whole batch; readers (the /metrics thread,
the --stats view, the final summary) take a `snapshot()` under the same lock.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from vxtap.collector.decode import NO_VNI, format_source

PACKETS, BYTES, TRUNCATED, MALFORMED = range(4)


@dataclass(frozen=True, slots=True)
class Row:
    vni: int | None  # None: datagrams too broken to carry a VNI
    source: str
    packets: int
    bytes: int  # inner frame bytes received (UDP payload bytes for malformed datagrams)
    truncated: int
    malformed: int


@dataclass(frozen=True, slots=True)
class Snapshot:
    rows: tuple[Row, ...]
    ring_received: int  # datagrams the kernel put in the ring
    ring_dropped: int  # datagrams the kernel dropped because the ring was full (host loss)
    pcap_records: int
    pcap_files: int

    def total(self, field: str) -> int:
        return sum(getattr(r, field) for r in self.rows)


class Counters:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        # (vni or NO_VNI, outer source address bytes) -> [packets, bytes, truncated, malformed]
        self.by_key: dict[tuple[int, bytes], list[int]] = {}
        self.ring_received = 0
        self.ring_dropped = 0
        self.pcap_records = 0
        self.pcap_files = 0

    def snapshot(self) -> Snapshot:
        with self.lock:
            items = [(k, list(v)) for k, v in self.by_key.items()]
            ring = (self.ring_received, self.ring_dropped, self.pcap_records, self.pcap_files)
        rows = tuple(
            sorted(
                (
                    Row(None if vni == NO_VNI else vni, format_source(src), *values)
                    for (vni, src), values in items
                ),
                key=lambda r: (r.vni is None, r.vni or 0, r.source),
            )
        )
        return Snapshot(rows, *ring)
