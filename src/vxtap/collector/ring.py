"""Receiving VXLAN datagrams: an AF_PACKET socket with a TPACKET_V3 ring.

Why AF_PACKET and not a UDP socket (docs/collector.md has the long form):
- it sees the datagrams whoever consumes them, so it works next to the kernel
  VXLAN devices of --decap (which own UDP 4789) and next to any other listener;
- a TPACKET_V3 ring hands over whole blocks of packets per wake-up, in shared
  memory, without a system call or a copy per packet;
- the kernel reports what it dropped because the ring was full
  (PACKET_STATISTICS), which is the host loss the counters show.
A classic BPF socket filter keeps everything that is not UDP to the port (and
address) out of the ring, so the Python side only ever sees candidate VXLAN.

The socket is SOCK_DGRAM ("cooked"): frames start at the network header on
every interface type, so one socket can listen on all interfaces.

Hand-written with ctypes/struct: the standard library has no TPACKET_V3 or BPF
assembler, and the PyPI packet-capture wrappers go through libpcap's
per-packet callback, which is the cost this module exists to avoid.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import ipaddress
import mmap
import os
import select
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass

SOL_PACKET = 263
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
TPACKET_V3 = 2
TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
SO_ATTACH_FILTER = 26

# struct tpacket_block_desc: version, offset_to_priv, then tpacket_hdr_v1:
# block_status, num_pkts, offset_to_first_pkt, ...
BLOCK_STATUS = struct.Struct("<I")
BLOCK_STATUS_OFFSET = 8
BLOCK_PACKETS = struct.Struct("<II")  # num_pkts, offset_to_first_pkt
BLOCK_PACKETS_OFFSET = 12
# struct tpacket3_hdr: tp_next_offset, tp_sec, tp_nsec, tp_snaplen, tp_len, tp_status, tp_mac
PACKET_HEADER = struct.Struct("<IIIIIIH")

# Classic BPF opcodes used below (linux/filter.h).
LD_W_ABS, LD_H_ABS, LD_B_ABS, LD_H_IND = 0x20, 0x28, 0x30, 0x48
LDX_B_MSH, ALU_AND_K, JEQ_K, JSET_K, RET_K = 0xB1, 0x54, 0x15, 0x45, 0x06
SKF_AD_PKTTYPE = 0xFFFFF000 + 4  # SKF_AD_OFF + SKF_AD_PKTTYPE, as an unsigned 32-bit offset


@dataclass(frozen=True)
class Listen:
    """What to receive: UDP to `port`, to `address` (None = any), on `interface` (None = all)."""

    port: int = 4789
    address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
    interface: str | None = None
    family: int | None = None  # socket.AF_INET / AF_INET6 for a wildcard of one family


def parse_listen(text: str) -> Listen:
    """Parse `ADDR:PORT`, `[V6ADDR]:PORT`, `*:PORT`, `:PORT` or `ADDR`.

    Raises ValueError naming the problem. `0.0.0.0` means any IPv4 destination,
    `::` any IPv6 one, `*` or nothing both.
    """
    host, port_text = text, "4789"
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"--listen {text!r}: expected [IPv6]:PORT")
        port_text = rest[1:] or port_text
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    elif text.count(":") > 1:  # a bare IPv6 address, or a mistake
        try:
            ipaddress.IPv6Address(text)
        except ValueError:
            raise ValueError(f"--listen {text!r}: write an IPv6 address as [ADDR]:PORT") from None
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"--listen {text!r}: port {port_text!r} is not a number") from None
    if not 1 <= port <= 65535:
        raise ValueError(f"--listen {text!r}: port {port} is outside 1-65535")
    if host in ("", "*"):
        return Listen(port)
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"--listen {text!r}: {host!r} is not an IP address") from None
    if address.is_unspecified:
        family = socket.AF_INET if address.version == 4 else socket.AF_INET6
        return Listen(port, None, None, family)
    return Listen(port, address)


class _Program:
    """A tiny classic-BPF assembler with labels (jumps are relative, forward only)."""

    def __init__(self) -> None:
        self.code: list[tuple[int, str | int, str | int, int]] = []
        self.labels: dict[str, int] = {}

    def op(self, code: int, k: int = 0, jt: str | int = 0, jf: str | int = 0) -> None:
        self.code.append((code, jt, jf, k))

    def label(self, name: str) -> None:
        self.labels[name] = len(self.code)

    def assemble(self) -> bytes:
        out = b""
        for i, (code, jt, jf, k) in enumerate(self.code):
            t = self.labels[jt] - i - 1 if isinstance(jt, str) else jt
            f = self.labels[jf] - i - 1 if isinstance(jf, str) else jf
            out += struct.pack("<HBBI", code, t, f, k & 0xFFFFFFFF)
        return out


def filter_program(listen: Listen) -> bytes:
    """Accept incoming IPv4/IPv6 UDP to the port (and address); offsets are from the IP header.

    Later IPv4 fragments are rejected (they have no UDP header); first fragments
    pass and are counted as malformed (a mirror is never fragmented).
    """
    p = _Program()
    p.op(LD_W_ABS, SKF_AD_PKTTYPE)
    p.op(JEQ_K, PACKET_OUTGOING, "drop", 0)
    p.op(LD_B_ABS, 0)
    p.op(ALU_AND_K, 0xF0)
    want4 = listen.family in (None, socket.AF_INET) and (
        listen.address is None or listen.address.version == 4
    )
    want6 = listen.family in (None, socket.AF_INET6) and (
        listen.address is None or listen.address.version == 6
    )
    p.op(JEQ_K, 0x40, "v4" if want4 else "drop", 0)
    p.op(JEQ_K, 0x60, "v6" if want6 else "drop", "drop")
    p.label("v4")
    p.op(LD_B_ABS, 9)
    p.op(JEQ_K, 17, 0, "drop")
    p.op(LD_H_ABS, 6)
    p.op(JSET_K, 0x1FFF, "drop", 0)
    if listen.address is not None and listen.address.version == 4:
        p.op(LD_W_ABS, 16)
        p.op(JEQ_K, int(listen.address), 0, "drop")
    p.op(LDX_B_MSH, 0)
    p.op(LD_H_IND, 2)
    p.op(JEQ_K, listen.port, "accept", "drop")
    p.label("v6")
    p.op(LD_B_ABS, 6)
    p.op(JEQ_K, 17, 0, "drop")
    if listen.address is not None and listen.address.version == 6:
        packed = listen.address.packed
        for i in range(4):
            p.op(LD_W_ABS, 24 + 4 * i)
            p.op(JEQ_K, int.from_bytes(packed[4 * i : 4 * i + 4], "big"), 0, "drop")
    p.op(LD_H_ABS, 42)
    p.op(JEQ_K, listen.port, "accept", "drop")
    p.label("accept")
    p.op(RET_K, 0xFFFFFFFF)
    p.label("drop")
    p.op(RET_K, 0)
    return p.assemble()


_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _attach_filter(sock: socket.socket, program: bytes) -> None:
    buf = ctypes.create_string_buffer(program)
    fprog = struct.pack("@HP", len(program) // 8, ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


def _bind_packet(sock: socket.socket, ifindex: int) -> None:
    # Python's bind() for AF_PACKET needs an interface name; ifindex 0 (all) needs raw bind(2).
    addr = struct.pack(
        "<HHiHBB8s", socket.AF_PACKET, socket.htons(ETH_P_ALL), ifindex, 0, 0, 0, b""
    )
    if _libc.bind(sock.fileno(), addr, len(addr)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"binding the packet socket: {os.strerror(err)}")


class PacketRing:
    """The AF_PACKET socket and its mmap'ed TPACKET_V3 ring of `block_count` blocks."""

    def __init__(
        self,
        listen: Listen,
        *,
        block_size: int = 1 << 20,
        block_count: int = 64,
        block_timeout_ms: int = 20,
    ) -> None:
        if block_size < 65536 + 4096 or block_size % mmap.PAGESIZE:
            raise ValueError(
                f"ring block size {block_size} must be a multiple of the page size >= 69632"
            )
        ifindex = 0
        if listen.interface is not None:
            try:
                ifindex = socket.if_nametoindex(listen.interface)
            except OSError:
                raise ValueError(f"interface {listen.interface!r} does not exist") from None
        # Protocol 0 receives nothing until bind: the filter and ring are in place first.
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, 0)
        try:
            _attach_filter(self.sock, filter_program(listen))
            self.sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
            frame_size = 2048
            req = struct.pack(
                "<IIIIIII",
                block_size,
                block_count,
                frame_size,
                block_size // frame_size * block_count,
                block_timeout_ms,
                0,
                0,
            )
            self.sock.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
            self.size = block_size * block_count
            self.map = mmap.mmap(self.sock.fileno(), self.size, mmap.MAP_SHARED)
            _bind_packet(self.sock, ifindex)
        except BaseException:
            self.sock.close()
            raise
        self.block_size = block_size
        self.block_count = block_count
        self.next_block = 0
        self.poller = select.poll()
        self.poller.register(self.sock.fileno(), select.POLLIN | select.POLLERR)

    def ready_block(self) -> int | None:
        """Offset of the next block the kernel has filled, or None."""
        offset = self.next_block * self.block_size
        status = BLOCK_STATUS.unpack_from(self.map, offset + BLOCK_STATUS_OFFSET)[0]
        return offset if status & TP_STATUS_USER else None

    def release(self, offset: int) -> None:
        BLOCK_STATUS.pack_into(self.map, offset + BLOCK_STATUS_OFFSET, TP_STATUS_KERNEL)
        self.next_block = (self.next_block + 1) % self.block_count

    def wait(self, timeout_ms: int) -> None:
        self.poller.poll(timeout_ms)

    def statistics(self) -> tuple[int, int]:
        """(queued, dropped) since the last call: the kernel resets them on read."""
        raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 12)
        packets, dropped, _freeze = struct.unpack("<III", raw)
        return packets - dropped, dropped  # for TPACKET_V3 the kernel adds drops into tp_packets

    def close(self) -> None:
        with contextlib.suppress(BufferError):
            self.map.close()
        self.sock.close()


class PortHolder:
    """A UDP socket bound to the port that takes in nothing (filter `ret 0`).

    Without any socket on the port the kernel answers every datagram with an
    ICMP port unreachable towards the mirror source. The packet socket does not
    count as a listener, so this one does, at the cost of a socket lookup per
    datagram. Not opened when something else already owns the port (the
    --decap devices, another program): then that one keeps the kernel quiet.
    """

    def __init__(self, listen: Listen) -> None:
        self.sockets: list[socket.socket] = []
        drop_all = struct.pack("<HBBI", RET_K, 0, 0, 0)
        families: Sequence[int]
        if listen.address is not None:
            families = [socket.AF_INET if listen.address.version == 4 else socket.AF_INET6]
        else:
            families = [listen.family] if listen.family else [socket.AF_INET, socket.AF_INET6]
        for family in families:
            s = socket.socket(family, socket.SOCK_DGRAM)
            try:
                _attach_filter(s, drop_all)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
                if family == socket.AF_INET6:
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                host = str(listen.address) if listen.address is not None else ""
                s.bind((host, listen.port))
            except OSError:
                s.close()  # someone else owns it (or no IPv6 here): nothing to hold
                continue
            self.sockets.append(s)

    def close(self) -> None:
        for s in self.sockets:
            s.close()
        self.sockets.clear()
