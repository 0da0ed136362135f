"""Building frames and VXLAN datagrams by hand: for tests and the benchmark.

Checksums are left zero: the collector never verifies inner checksums (a cut
copy could not be verified anyway), and outer ones are the kernel's business.
"""

from __future__ import annotations

import ipaddress

VXLAN_FLAGS = 0x08


def mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def ethernet(
    payload: bytes, *, src: str, dst: str, ethertype: int, vlan: int | None = None
) -> bytes:
    tag = b"" if vlan is None else (0x8100).to_bytes(2, "big") + vlan.to_bytes(2, "big")
    return mac(dst) + mac(src) + tag + ethertype.to_bytes(2, "big") + payload


def ipv4(payload: bytes, *, src: str, dst: str, protocol: int, ttl: int = 64) -> bytes:
    total = 20 + len(payload)
    header = bytes([0x45, 0]) + total.to_bytes(2, "big") + b"\x12\x34\x40\x00"
    header += bytes([ttl, protocol, 0, 0])
    return header + ipaddress.IPv4Address(src).packed + ipaddress.IPv4Address(dst).packed + payload


def ipv6(payload: bytes, *, src: str, dst: str, next_header: int, hop_limit: int = 64) -> bytes:
    header = b"\x60\x00\x00\x00" + len(payload).to_bytes(2, "big") + bytes([next_header, hop_limit])
    return header + ipaddress.IPv6Address(src).packed + ipaddress.IPv6Address(dst).packed + payload


def tcp(
    payload: bytes = b"",
    *,
    sport: int,
    dport: int,
    seq: int = 0,
    ack: int = 0,
    flags: int = 0x18,
    window: int = 502,
    options: bytes = b"",
) -> bytes:
    if len(options) % 4:
        raise ValueError("TCP options must be padded to a multiple of 4 bytes")
    offset = (20 + len(options)) // 4
    header = sport.to_bytes(2, "big") + dport.to_bytes(2, "big")
    header += seq.to_bytes(4, "big") + ack.to_bytes(4, "big")
    header += bytes([offset << 4, flags]) + window.to_bytes(2, "big") + b"\0\0\0\0"
    return header + options + payload


def udp(payload: bytes, *, sport: int, dport: int) -> bytes:
    length = 8 + len(payload)
    return (
        sport.to_bytes(2, "big")
        + dport.to_bytes(2, "big")
        + length.to_bytes(2, "big")
        + b"\0\0"
        + payload
    )


def icmp_echo(
    payload: bytes, *, ident: int, seq: int, version: int = 4, reply: bool = False
) -> bytes:
    kind = (0 if reply else 8) if version == 4 else (129 if reply else 128)
    return bytes([kind, 0, 0, 0]) + ident.to_bytes(2, "big") + seq.to_bytes(2, "big") + payload


def vxlan(inner: bytes, *, vni: int, flags: int = VXLAN_FLAGS) -> bytes:
    """The UDP payload: VXLAN header plus the inner frame."""
    return bytes([flags, 0, 0, 0]) + vni.to_bytes(3, "big") + b"\0" + inner


def datagram(
    inner: bytes,
    *,
    vni: int,
    src: str,
    dst: str,
    flags: int = VXLAN_FLAGS,
    sport: int = 49152,
    dport: int = 4789,
) -> bytes:
    """The outer IP datagram (IPv4 or IPv6 by the addresses) of a VXLAN-carried frame."""
    payload = vxlan(inner, vni=vni, flags=flags)
    return outer(payload, src=src, dst=dst, sport=sport, dport=dport)


def outer(payload: bytes, *, src: str, dst: str, sport: int = 49152, dport: int = 4789) -> bytes:
    """Outer IP + UDP around any UDP payload."""
    segment = udp(payload, sport=sport, dport=dport)
    if ipaddress.ip_address(src).version == 4:
        return ipv4(segment, src=src, dst=dst, protocol=17)
    return ipv6(segment, src=src, dst=dst, next_header=17)


def cut(frame: bytes, length: int) -> bytes:
    """A copy cut to `length` bytes, as a session's packet_length does."""
    return frame[:length]


def ring_block(
    datagrams: list[bytes], *, size: int, times: list[tuple[int, int]] | None = None
) -> bytearray:
    """A TPACKET_V3 ring block as the kernel lays one out for a SOCK_DGRAM socket.

    The block descriptor (num_pkts at 12, offset_to_first_pkt at 16), then per
    datagram a struct tpacket3_hdr (next offset, sec, nsec, snaplen, len, status,
    mac) with the datagram at `mac`, each slot aligned to 16 bytes.
    """
    first, mac = 64, 80  # where the kernel puts them (48-byte header, sockaddr_ll room)
    block = bytearray(size)
    pos = first
    for i, d in enumerate(datagrams):
        slot = (mac + len(d) + 15) & ~15
        if pos + slot > size:
            raise ValueError(f"{len(datagrams)} datagrams do not fit in a block of {size}")
        sec, nsec = times[i] if times else (1_700_000_000 + i, i)
        step = slot if i < len(datagrams) - 1 else 0
        header = b"".join(v.to_bytes(4, "little") for v in (step, sec, nsec, len(d), len(d), 1))
        block[pos : pos + 26] = header + mac.to_bytes(2, "little")
        block[pos + mac : pos + mac + len(d)] = d
        pos += slot
    block[12:20] = len(datagrams).to_bytes(4, "little") + first.to_bytes(4, "little")
    return block
