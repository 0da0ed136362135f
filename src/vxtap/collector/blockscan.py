"""The receive loop's per-packet work, compiled: one call per TPACKET_V3 ring block.

Why compiled: written in Python, the loop cost ~1 µs of CPU per 64-byte mirror
against tcpdump's ~0.1 µs (docs/benchmarks.md, Collector); the object work per
packet (struct tuples, ints, memoryviews for writev) was the floor. numba
compiles this module's functions to machine code at first use and caches the
result on disk (next to this file, or under NUMBA_CACHE_DIR), so no C toolchain
is needed to install vxtap and the code stays readable Python.

One pass over the block classifies each datagram exactly like
`decode.classify()` (the readable reference, which also says *why* a datagram
is malformed; tests/collector/test_blockscan.py checks that both agree on
generated and broken datagrams), adds it to its counters group (VNI, outer
source) and assigns stored ones to their VNI's output slot. A second pass
copies each stored inner frame behind its 16-byte pcap record header into the
output buffer, grouped by VNI in arrival order, so every pcap file gets one
write(2) per block.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from numba import njit

# Kinds, as decode.Kind (numba compiles plain integer constants into the code).
OK, TRUNCATED, BAD_INNER, MALFORMED = 0, 1, 2, 3
NO_VNI = -1
VXLAN_FLAGS = 0x08
RECORD_HEADER_LEN = 16

# Columns of the per-packet table.
P_BASE, P_LENGTH, P_SEC, P_NSEC, P_INNER, P_END, P_ORIG = range(7)
PACKET_COLUMNS = 7
# Columns of the counters table, as counters.PACKETS, BYTES, TRUNCATED, MALFORMED.
COUNTER_COLUMNS = 4

Bytes = npt.NDArray[np.uint8]
Ints = npt.NDArray[np.int64]


@njit(cache=True, nogil=True)
def classify(buf: Bytes, base: int, length: int) -> tuple[int, int, int, int, int, int, int]:
    """(kind, vni, source offset, source length, inner offset, inner end, original length).

    Offsets (inner, end) are relative to base, as decode.classify()'s.
    """
    if length < 1:
        return MALFORMED, NO_VNI, 0, 0, 0, 0, 0
    version = buf[base] >> 4
    if version == 4:
        if length < 20:
            return MALFORMED, NO_VNI, 0, 0, 0, 0, 0
        src, srclen = base + 12, 4
        udp = (buf[base] & 0x0F) * 4
        end = np.int64(buf[base + 2]) << 8 | buf[base + 3]
        if udp < 20 or buf[base + 6] & 0x3F or buf[base + 7]:
            return MALFORMED, NO_VNI, src, srclen, 0, 0, 0
    elif version == 6:
        if length < 40:
            return MALFORMED, NO_VNI, 0, 0, 0, 0, 0
        src, srclen = base + 8, 16
        udp = 40
        end = 40 + (np.int64(buf[base + 4]) << 8 | buf[base + 5])
    else:
        return MALFORMED, NO_VNI, 0, 0, 0, 0, 0
    vxlan = udp + 8
    if end > length or end < vxlan + 8 or buf[base + vxlan] != VXLAN_FLAGS:
        return MALFORMED, NO_VNI, src, srclen, 0, 0, 0
    v = base + vxlan + 4
    vni = np.int64(buf[v]) << 16 | np.int64(buf[v + 1]) << 8 | buf[v + 2]
    inner = vxlan + 8
    captured = end - inner
    if captured < 14:
        return MALFORMED, vni, src, srclen, inner, end, captured
    e = base + inner
    ethertype = np.int64(buf[e + 12]) << 8 | buf[e + 13]
    l3 = 14
    if (ethertype == 0x8100 or ethertype == 0x88A8) and captured >= 18:
        ethertype = np.int64(buf[e + 16]) << 8 | buf[e + 17]
        l3 = 18
    if ethertype == 0x0800:
        if captured < l3 + 4 or buf[e + l3] >> 4 != 4:
            return BAD_INNER, vni, src, srclen, inner, end, captured
        total = np.int64(buf[e + l3 + 2]) << 8 | buf[e + l3 + 3]
        if total < 20:
            return BAD_INNER, vni, src, srclen, inner, end, captured
        expected = l3 + total
    elif ethertype == 0x86DD:
        if captured < l3 + 6 or buf[e + l3] >> 4 != 6:
            return BAD_INNER, vni, src, srclen, inner, end, captured
        expected = l3 + 40 + (np.int64(buf[e + l3 + 4]) << 8 | buf[e + l3 + 5])
    else:
        return OK, vni, src, srclen, inner, end, captured
    if expected > captured:
        return TRUNCATED, vni, src, srclen, inner, end, expected
    return OK, vni, src, srclen, inner, end, captured


@njit(cache=True, nogil=True, inline="always")
def _u32(buf: Bytes, at: int) -> int:
    """A little-endian (host order on x86 and arm64) u32 of the ring's headers."""
    return int(
        np.int64(buf[at])
        | np.int64(buf[at + 1]) << 8
        | np.int64(buf[at + 2]) << 16
        | np.int64(buf[at + 3]) << 24
    )


@njit(cache=True, nogil=True, inline="always")
def _put_u32(out: Bytes, at: int, value: int) -> None:
    out[at] = value & 0xFF
    out[at + 1] = (value >> 8) & 0xFF
    out[at + 2] = (value >> 16) & 0xFF
    out[at + 3] = (value >> 24) & 0xFF


@njit(cache=True, nogil=True)
def _wanted(vnis: Ints, vni: int) -> bool:
    """vnis is sorted; empty means every VNI."""
    if vnis.size == 0:
        return True
    i = np.searchsorted(vnis, vni)
    return bool(i < vnis.size and vnis[i] == vni)


@njit(cache=True, nogil=True, inline="always")
def _source_key(buf: Bytes, src: int, srclen: int) -> tuple[int, int]:
    """The outer source address as two integers (IPv4: (0, address))."""
    high = low = 0
    for i in range(srclen - 8):
        high = high << 8 | int(buf[src + i])
    for i in range(max(srclen - 8, 0), srclen):
        low = low << 8 | int(buf[src + i])
    return high, low


@njit(cache=True, nogil=True, inline="always")
def _group(keys: Ints, groups: int, last: int, vni: int, srclen: int, high: int, low: int) -> int:
    """Index of the counters group (vni, source) in keys[:groups], or -1.

    A block rarely holds more than a few groups, and consecutive packets mostly
    share one, so the last one hit is tried first and the rest linearly.
    """
    if last >= 0 and (
        keys[last, 0] == vni
        and keys[last, 1] == srclen
        and keys[last, 2] == high
        and keys[last, 3] == low
    ):
        return last
    for g in range(groups):
        if keys[g, 0] == vni and keys[g, 1] == srclen and keys[g, 2] == high and keys[g, 3] == low:
            return g
    return -1


@njit(cache=True, nogil=True)
def scan_block(
    ring: Bytes,
    first: int,
    count: int,
    vnis: Ints,
    store: bool,
    show: bool,
    packets: Ints,
    group_keys: Ints,
    group_src: Bytes,
    group_counts: Ints,
    slot_vni: Ints,
    slot_records: Ints,
    slot_bytes: Ints,
    record_slot: Ints,
    record_end: Ints,
    out: Bytes,
    shown: Ints,
) -> tuple[int, int, int]:
    """Process the `count` packets of the block whose first packet header is at `first`.

    Fills (all preallocated by BlockScan): `packets` (one row per packet), the
    counters groups, the VNI slots of stored (or storable) frames and, when
    `store`, `out` with the pcap records slot by slot and `record_end` with the
    end offset in `out` of each record, in that order; `shown` with the indexes
    of the packets to show. Returns (groups, slots, shown).
    """
    groups = slots = n_shown = 0
    last_group = last_slot = -1
    pos = first
    for p in range(count):
        # struct tpacket3_hdr: tp_next_offset, tp_sec, tp_nsec, tp_snaplen, tp_len,
        # tp_status, tp_mac (u16).
        step = _u32(ring, pos)
        length = _u32(ring, pos + 12)
        base = pos + int(np.int64(ring[pos + 24]) | np.int64(ring[pos + 25]) << 8)
        kind, vni, src, srclen, inner, end, orig = classify(ring, base, length)
        # (2-D indexing throughout: a row view would cost a reference count per use.)
        packets[p, P_BASE], packets[p, P_LENGTH] = base, length
        packets[p, P_SEC], packets[p, P_NSEC] = _u32(ring, pos + 4), _u32(ring, pos + 8)
        packets[p, P_INNER], packets[p, P_END], packets[p, P_ORIG] = base + inner, base + end, orig
        pos += step

        high, low = _source_key(ring, src, srclen)
        g = _group(group_keys, groups, last_group, vni, srclen, high, low)
        if g < 0:
            g = groups
            groups += 1
            group_keys[g, 0], group_keys[g, 1], group_keys[g, 2], group_keys[g, 3] = (
                vni,
                srclen,
                high,
                low,
            )
            for i in range(srclen):
                group_src[g, i] = ring[src + i]
        last_group = g
        group_counts[g, 0] += 1
        if kind == MALFORMED:
            group_counts[g, 1] += length
            group_counts[g, 3] += 1
        else:
            group_counts[g, 1] += end - inner
            if kind == TRUNCATED:
                group_counts[g, 2] += 1
            elif kind == BAD_INNER:
                group_counts[g, 3] += 1
        wanted = _wanted(vnis, vni)
        if show and (wanted or kind == MALFORMED):
            shown[n_shown] = p
            n_shown += 1
        if kind == MALFORMED or not wanted:
            record_slot[p] = -1
            continue
        s = last_slot
        if s < 0 or slot_vni[s] != vni:
            s = 0
            while s < slots and slot_vni[s] != vni:
                s += 1
            if s == slots:
                slot_vni[s], slot_records[s], slot_bytes[s] = vni, 0, 0
                slots += 1
            last_slot = s
        record_slot[p] = s
        slot_records[s] += 1
        slot_bytes[s] += RECORD_HEADER_LEN + end - inner

    if not store:
        return groups, slots, n_shown
    # Second pass: each slot's records start where the previous slot's end.
    slot_at = np.empty(slots, np.int64)
    slot_index = np.empty(slots, np.int64)
    at = index = 0
    for s in range(slots):
        slot_at[s], slot_index[s] = at, index
        at += slot_bytes[s]
        index += slot_records[s]
    if at > out.size:  # cannot happen for a kernel-made block (see BlockScan); never overrun
        raise ValueError("the block's records exceed the output buffer")
    for p in range(count):
        s = record_slot[p]
        if s < 0:
            continue
        inner, end = packets[p, P_INNER], packets[p, P_END]
        captured = end - inner
        o = slot_at[s]
        _put_u32(out, o, packets[p, P_SEC])
        _put_u32(out, o + 4, packets[p, P_NSEC])
        _put_u32(out, o + 8, captured)
        _put_u32(out, o + 12, max(packets[p, P_ORIG], captured))
        o += RECORD_HEADER_LEN
        # Unsigned indexes: no negative-index wrap-around check, so LLVM turns the loop
        # into a vectorised copy (20x faster than a slice assignment here).
        for i in range(np.uint64(captured)):
            out[np.uint64(o) + i] = ring[np.uint64(inner) + i]
        slot_at[s] = o + captured
        record_end[slot_index[s]] = slot_at[s]
        slot_index[s] += 1
    return groups, slots, n_shown


@dataclass(frozen=True)
class Group:
    """One counters group of a block: (VNI or NO_VNI, outer source address bytes)."""

    vni: int
    source: bytes
    packets: int
    bytes: int
    truncated: int
    malformed: int


@dataclass(frozen=True)
class Slot:
    """The stored frames of one VNI in a block: whole pcap records, back to back."""

    vni: int
    data: memoryview
    ends: list[int]  # end offset of each record in data


@dataclass(frozen=True)
class Shown:
    time_ns: int
    base: int  # offset of the outer IP header in the ring
    length: int


@dataclass(frozen=True)
class BlockResult:
    groups: list[Group]
    slots: list[Slot]
    shown: list[Shown]


class BlockScan:
    """The preallocated tables scan_block() fills, sized for one ring block.

    A packet slot in a TPACKET_V3 block takes at least 64 bytes (its 48-byte
    header, aligned, plus data), so a block never holds more than
    block_size // 64 packets; the pcap records are smaller than the packets they
    come from (16 bytes of record header for at least 36 bytes of outer headers),
    so `out` needs no more than a block.
    """

    def __init__(self, block_size: int) -> None:
        n = block_size // 64
        self.packets = np.zeros((n, PACKET_COLUMNS), np.int64)
        self.group_keys = np.zeros((n, 4), np.int64)  # vni, source length, source as 2 ints
        self.group_src = np.zeros((n, 16), np.uint8)
        self.group_counts = np.zeros((n, COUNTER_COLUMNS), np.int64)
        self.slot_vni = np.zeros(n, np.int64)
        self.slot_records = np.zeros(n, np.int64)
        self.slot_bytes = np.zeros(n, np.int64)
        self.record_slot = np.zeros(n, np.int64)
        self.record_end = np.zeros(n, np.int64)
        self.out = np.zeros(block_size, np.uint8)
        self.shown = np.zeros(n, np.int64)
        self.capacity = n

    def warm_up(self) -> None:
        """Compile (seconds, the first time) or load from the cache (~0.5 s) now,
        not when the first block is waiting."""
        self.scan(self.out, 0, 0, vnis=np.zeros(0, np.int64), store=True, show=True)

    def scan(
        self,
        ring: Bytes,
        first: int,
        count: int,
        *,
        vnis: Ints,
        store: bool,
        show: bool,
    ) -> BlockResult:
        """The block's counters, pcap records per VNI and packets to show.

        `ring` is the whole ring as uint8; `vnis` sorted (empty: every VNI). The
        slots' data views `out`, which the next scan overwrites.
        """
        if count > self.capacity:
            raise ValueError(f"a block of {count} packets exceeds the {self.capacity} expected")
        self.group_counts[:count] = 0
        groups, slots, n_shown = scan_block(
            ring,
            first,
            count,
            vnis,
            store,
            show,
            self.packets,
            self.group_keys,
            self.group_src,
            self.group_counts,
            self.slot_vni,
            self.slot_records,
            self.slot_bytes,
            self.record_slot,
            self.record_end,
            self.out,
            self.shown,
        )
        counts: list[list[int]] = self.group_counts[:groups].tolist()
        keys: list[list[int]] = self.group_keys[:groups].tolist()
        result_groups = [
            Group(keys[g][0], self.group_src[g, : keys[g][1]].tobytes(), *counts[g])
            for g in range(groups)
        ]
        result_slots: list[Slot] = []
        if store:
            out = memoryview(self.out)  # type: ignore[arg-type]
            start = index = 0
            for s in range(slots):
                k = int(self.slot_records[s])
                ends: list[int] = (self.record_end[index : index + k] - start).tolist()
                size = int(self.slot_bytes[s])
                result_slots.append(Slot(int(self.slot_vni[s]), out[start : start + size], ends))
                start += size
                index += k
        else:
            result_slots = [
                Slot(int(v), memoryview(b""), []) for v in self.slot_vni[:slots].tolist()
            ]
        rows: list[list[int]] = self.packets[self.shown[:n_shown]].tolist()
        result_shown = [
            Shown(sec * 1_000_000_000 + nsec, base, length) for base, length, sec, nsec, *_ in rows
        ]
        return BlockResult(result_groups, result_slots, result_shown)


def as_array(buffer: Any) -> Bytes:
    """A uint8 view of a writable buffer (the mmap'ed ring), without a copy."""
    return np.frombuffer(buffer, np.uint8)
