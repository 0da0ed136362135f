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
# Counter series (VNI, outer source) kept apart; the rest are folded into one "other"
# series, so that datagrams from spoofed sources on random VNIs cannot grow memory
# (or the /metrics page) without bound.
DEFAULT_MAX_SERIES = 4096
OTHER = "other"


@dataclass(frozen=True, slots=True)
class Row:
    vni: int | None  # None: datagrams too broken to carry a VNI
    source: str
    packets: int
    bytes: int  # inner frame bytes received (UDP payload bytes for malformed datagrams)
    truncated: int
    malformed: int
    other: bool = False  # the series that every (VNI, source) beyond the limit is folded into


@dataclass(frozen=True, slots=True)
class Snapshot:
    rows: tuple[Row, ...]
    ring_received: int  # datagrams the kernel put in the ring
    ring_dropped: int  # datagrams the kernel dropped because the ring was full (host loss)
    pcap_records: int
    pcap_files: int
    pcap_open_files: int = 0
    pcap_files_closed: int = 0  # closed early to stay within the open-file limit
    pcap_unstored: int = 0  # frames of VNIs beyond the pcap VNI limit
    max_series: int = DEFAULT_MAX_SERIES

    def total(self, field: str) -> int:
        return sum(getattr(r, field) for r in self.rows)

    @property
    def folded(self) -> int:
        """Datagrams counted in the "other" series (their own would pass max_series)."""
        return sum(r.packets for r in self.rows if r.other)

    @property
    def series(self) -> int:
        return sum(not r.other for r in self.rows)


class CollectorCounters:
    def __init__(self, max_series: int = DEFAULT_MAX_SERIES) -> None:
        if max_series < 1:
            raise ValueError(f"at least one counter series must be kept, not {max_series}")
        self.lock = threading.Lock()
        self.max_series = max_series
        # (vni or NO_VNI, outer source address bytes) -> [packets, bytes, truncated, malformed]
        self.by_key: dict[tuple[int, bytes], list[int]] = {}
        self.other = [0, 0, 0, 0]  # every series beyond max_series, folded
        self.ring_received = 0
        self.ring_dropped = 0
        self.pcap_records = 0
        self.pcap_files = 0
        self.pcap_open_files = 0
        self.pcap_files_closed = 0
        self.pcap_unstored = 0

    def add(
        self, vni: int, source: bytes, packets: int, size: int, truncated: int, malformed: int
    ) -> None:
        """Count one group of a block (the caller holds `lock`)."""
        c = self.by_key.get((vni, source))
        if c is None:
            if len(self.by_key) < self.max_series:
                c = self.by_key[(vni, source)] = [0, 0, 0, 0]
            else:
                c = self.other
        c[PACKETS] += packets
        c[BYTES] += size
        c[TRUNCATED] += truncated
        c[MALFORMED] += malformed

    def snapshot(self) -> Snapshot:
        with self.lock:
            items = [(k, list(v)) for k, v in self.by_key.items()]
            other = list(self.other)
            ring = (self.ring_received, self.ring_dropped, self.pcap_records, self.pcap_files)
            pcap = (self.pcap_open_files, self.pcap_files_closed, self.pcap_unstored)
        rows = sorted(
            (
                Row(None if vni == NO_VNI else vni, format_source(src), p, b, t, m)
                for (vni, src), (p, b, t, m) in items
            ),
            key=lambda r: (r.vni is None, r.vni or 0, r.source),
        )
        if any(other):
            packets, size, truncated, malformed = other
            rows.append(Row(None, OTHER, packets, size, truncated, malformed, other=True))
        return Snapshot(tuple(rows), *ring, *pcap, max_series=self.max_series)
