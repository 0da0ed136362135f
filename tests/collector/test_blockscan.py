"""The compiled block loop against the readable reference, decode.classify().

Every datagram of a generated ring block must be counted, stored and shown
exactly as the reference says, byte for byte, including cut, malformed and
foreign datagrams.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vxtap.collector import blockscan
from vxtap.collector.decode import Kind, classify
from vxtap.collector.pcap import record
from vxtap.testing import frames as f

BLOCK = 1 << 16
MACS = {"src": "02:00:00:00:00:01", "dst": "02:00:00:00:00:02"}


@st.composite
def datagrams(draw: st.DrawFn) -> bytes:
    """VXLAN datagrams as sources send them, some cut or damaged, and foreign ones."""
    v6_outer = draw(st.booleans())
    sources = ["2001:db8::1", "2001:db8::2"] if v6_outer else ["10.0.0.1", "10.0.0.2"]
    src = draw(st.sampled_from(sources))
    dst = "2001:db8::ff" if v6_outer else "10.0.0.255"
    payload = draw(st.binary(max_size=120))
    inner_kind = draw(st.sampled_from(["ipv4", "ipv6", "arp", "vlan"]))
    if inner_kind == "ipv6":
        packet = f.ipv6(f.udp(payload, sport=1, dport=2), src="fd::1", dst="fd::2", next_header=17)
        frame = f.ethernet(packet, ethertype=0x86DD, **MACS)
    elif inner_kind == "arp":
        frame = f.ethernet(payload, ethertype=0x0806, **MACS)
    else:
        packet = f.ipv4(
            f.tcp(payload, sport=3, dport=4), src="10.9.0.1", dst="10.9.0.2", protocol=6
        )
        vlan = 7 if inner_kind == "vlan" else None
        frame = f.ethernet(packet, ethertype=0x0800, vlan=vlan, **MACS)
    frame = f.cut(frame, draw(st.integers(min_value=0, max_value=len(frame))))
    vni = draw(st.sampled_from([0, 1, 7, 0xFFFFFF]))
    flags = draw(st.sampled_from([0x08, 0x08, 0x08, 0x0C, 0x00]))
    d = bytearray(f.datagram(frame, vni=vni, src=src, dst=dst, flags=flags))
    damage = draw(st.sampled_from(["none", "none", "flip", "cut", "foreign"]))
    if damage == "flip":
        d[draw(st.integers(min_value=0, max_value=len(d) - 1))] ^= draw(
            st.integers(min_value=1, max_value=255)
        )
    elif damage == "cut":
        d = d[: draw(st.integers(min_value=1, max_value=len(d)))]
    elif damage == "foreign":
        d = bytearray(draw(st.binary(min_size=1, max_size=80)))
    return bytes(d)


def reference(
    batch: list[bytes], vnis: frozenset[int] | None
) -> tuple[dict[tuple[int, bytes], list[int]], dict[int, bytes], list[tuple[int, bytes]]]:
    """(counters, pcap bytes per VNI, shown) as the receive loop must produce them."""
    counters: dict[tuple[int, bytes], list[int]] = {}
    stored: dict[int, bytes] = {}
    shown: list[tuple[int, bytes]] = []
    for i, d in enumerate(batch):
        kind, vni, src, inner, end, orig, _reason = classify(d, 0, len(d))
        c = counters.setdefault((vni, src), [0, 0, 0, 0])
        c[0] += 1
        c[1] += len(d) if kind is Kind.MALFORMED else end - inner
        c[2] += kind is Kind.TRUNCATED
        c[3] += kind in (Kind.MALFORMED, Kind.BAD_INNER)
        wanted = vnis is None or vni in vnis
        if wanted or kind is Kind.MALFORMED:
            shown.append(((1_700_000_000 + i) * 1_000_000_000 + i, d))
        if wanted and kind is not Kind.MALFORMED:
            stored[vni] = stored.get(vni, b"") + record(1_700_000_000 + i, i, d[inner:end], orig)
    return counters, stored, shown


def scan(
    batch: list[bytes], vnis: frozenset[int] | None, *, store: bool = True
) -> blockscan.BlockResult:
    ring = np.frombuffer(f.ring_block(batch, size=BLOCK), np.uint8)
    wanted = np.array(sorted(vnis or ()), np.int64)
    return blockscan.BlockScan(BLOCK).scan(
        ring, 64, len(batch), vnis=wanted, store=store, show=True
    )


@settings(max_examples=400, deadline=None)
@given(
    st.lists(datagrams(), min_size=1, max_size=40),
    st.sampled_from([None, frozenset({1}), frozenset({0, 0xFFFFFF})]),
)
def test_block_loop_agrees_with_the_reference(
    batch: list[bytes], vnis: frozenset[int] | None
) -> None:
    counters, stored, shown = reference(batch, vnis)
    result = scan(batch, vnis)
    assert {
        (g.vni, g.source): [g.packets, g.bytes, g.truncated, g.malformed] for g in result.groups
    } == counters
    assert {s.vni: bytes(s.data) for s in result.slots} == stored
    assert [s.vni for s in result.slots] == list(stored)  # in order of first arrival
    for s in result.slots:  # record boundaries: each end is where a record header starts
        data, at = bytes(s.data), 0
        for end in s.ends:
            at += 16 + int.from_bytes(data[at + 8 : at + 12], "little")
            assert end == at
        assert at == len(data)
    ring = f.ring_block(batch, size=BLOCK)
    assert [(s.time_ns, bytes(ring[s.base : s.base + s.length])) for s in result.shown] == shown


def test_counting_only_reports_the_vnis_without_copying() -> None:
    frame = f.ethernet(
        f.ipv4(f.udp(b"x", sport=1, dport=2), src="10.0.0.1", dst="10.0.0.2", protocol=17),
        ethertype=0x0800,
        **MACS,
    )
    batch = [f.datagram(frame, vni=v, src="10.0.0.1", dst="10.0.0.2") for v in (5, 6, 5)]
    result = scan(batch, None, store=False)
    assert [(s.vni, bytes(s.data)) for s in result.slots] == [(5, b""), (6, b"")]
    assert [(g.vni, g.packets) for g in result.groups] == [(5, 2), (6, 1)]


def test_a_block_larger_than_expected_is_refused() -> None:
    with pytest.raises(ValueError, match="exceeds"):
        blockscan.BlockScan(4096).scan(
            np.zeros(4096, np.uint8), 64, 65, vnis=np.zeros(0, np.int64), store=True, show=False
        )


def test_kinds_are_the_references() -> None:
    assert (blockscan.OK, blockscan.TRUNCATED, blockscan.BAD_INNER, blockscan.MALFORMED) == (
        Kind.OK,
        Kind.TRUNCATED,
        Kind.BAD_INNER,
        Kind.MALFORMED,
    )
