"""The mirror's eBPF programs, hand-assembled, and the values of their tunnel map.

Why by hand: the agent must not need clang, kernel headers or libbpf at run time
(a user's host has none of them), and the program is ~760 mostly straight-line
instructions whose logic fits on a page. A tiny assembler with named opcodes
and labels keeps it readable; there is no maintained pure-Python eBPF
assembler to depend on. The verifier checks the result at load time.

What the program does, at tc ingress of a copy device's peer (direct action):
  key = skb->mark                                     -- set by nft before `dup` (on the
                                                         priority path moved there by a
                                                         second tiny program at tc egress)
  t = tunnels[key]            or drop                 -- one entry per (session, source)
  skb->mark = skb->priority = 0                       -- the copy must not steer routing
  skb->hash = a symmetric hash of the inner flow      -- VXLAN's outer source port comes
                                                         from it: the same both ways, and
                                                         never from the IPv6 flow label
      (the common copy, IPv4 without options or IPv6 without extension headers, is
      read directly from the linear data; anything else with bpf_skb_load_bytes)
  cut to t.snaplen; if the kernel refuses (the cut would end inside what it takes
  for headers), rewrite the copy so that it can: save its first snaplen bytes,
  shrink it behind the Ethernet header until no header offset is left inside it,
  set the length, write the saved bytes back. What cannot be cut (shorter than
  Ethernet + IPv4 header, which the VXLAN device drops, or a copy the kernel marks
  encapsulated) is counted in the entry and dropped: never longer than asked.
  then one of two ways, by the entry's flags:
  - bpf_skb_set_tunnel_key(t.key: VNI, remote, local, ttl);
    redirect to the VXLAN device (t.ifindex)
  - or (IPv4 targets, where the kernel allows, docs/dataplane.md "VXLAN in the
    program") encapsulate here: bpf_skb_adjust_room makes room for outer IPv4 + UDP +
    VXLAN + the inner Ethernet header (the encapsulation flags mark the inner headers,
    so an inner checksum left to offload is still completed right), the program
    writes those headers and the IPv4 checksum in one store, and bpf_redirect_neigh
    sends the mirror out of t.ifindex, the device of the route to the target (the
    neighbour table fills in the MACs)
Per copy that needs no rewrite: 5 helper calls on the device's path, 7 in the program's
(docs/dataplane.md, "The mirror program's cost per packet").

This module is pure: it builds instructions and map values and makes no system call
(the bpf(2) side is `vxtap.dataplane.bpf.syscall`).
"""

from __future__ import annotations

import hashlib
import ipaddress
import struct
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Final

from vxtap.dataplane.placement import TABLE_SLOTS

# --- the assembler ---


class Reg(IntEnum):
    R0 = 0
    R1 = 1
    R2 = 2
    R3 = 3
    R4 = 4
    R5 = 5
    R6 = 6
    R7 = 7
    R8 = 8
    R9 = 9
    FP = 10


class Op(IntEnum):
    """Opcodes used here (class | size/source | operation, from linux/bpf_common.h)."""

    LD_IMM64 = 0x18  # BPF_LD | BPF_IMM | BPF_DW
    LDX_B = 0x71  # BPF_LDX | BPF_MEM | BPF_B
    LDX_H = 0x69  # BPF_LDX | BPF_MEM | BPF_H
    LDX_W = 0x61  # BPF_LDX | BPF_MEM | BPF_W
    LDX_DW = 0x79  # BPF_LDX | BPF_MEM | BPF_DW
    STX_DW = 0x7B  # BPF_STX | BPF_MEM | BPF_DW
    STX_W = 0x63  # BPF_STX | BPF_MEM | BPF_W
    ATOMIC_DW = 0xDB  # BPF_STX | BPF_ATOMIC | BPF_DW (imm BPF_ADD: lock-free add)
    MOV_K = 0xB7  # BPF_ALU64 | BPF_MOV | BPF_K
    MOV_X = 0xBF  # BPF_ALU64 | BPF_MOV | BPF_X
    ADD_K = 0x07  # BPF_ALU64 | BPF_ADD | BPF_K
    ADD_X = 0x0F  # BPF_ALU64 | BPF_ADD | BPF_X
    SUB_X = 0x1F  # BPF_ALU64 | BPF_SUB | BPF_X
    AND_K = 0x57  # BPF_ALU64 | BPF_AND | BPF_K
    OR_K = 0x47  # BPF_ALU64 | BPF_OR | BPF_K
    XOR_K = 0xA7  # BPF_ALU64 | BPF_XOR | BPF_K
    MUL_X = 0x2F  # BPF_ALU64 | BPF_MUL | BPF_X
    MOD_K = 0x97  # BPF_ALU64 | BPF_MOD | BPF_K
    RSH_K = 0x77  # BPF_ALU64 | BPF_RSH | BPF_K
    TO_BE = 0xDC  # BPF_ALU | BPF_END | BPF_TO_BE: imm 16 or 32 bits to network order
    STX_H = 0x6B  # BPF_STX | BPF_MEM | BPF_H
    OR_X = 0x4F  # BPF_ALU64 | BPF_OR | BPF_X
    LSH_K = 0x67  # BPF_ALU64 | BPF_LSH | BPF_K
    NEG = 0x87  # BPF_ALU64 | BPF_NEG
    # 32-bit ALU (the upper half is zeroed): the flow hash works on 32-bit words.
    XOR32_X = 0xAC  # BPF_ALU | BPF_XOR | BPF_X
    MUL32_K = 0x24  # BPF_ALU | BPF_MUL | BPF_K
    RSH32_K = 0x74  # BPF_ALU | BPF_RSH | BPF_K
    OR32_K = 0x44  # BPF_ALU | BPF_OR | BPF_K
    MOV32_X = 0xBC  # BPF_ALU | BPF_MOV | BPF_X
    JA = 0x05
    JEQ_K = 0x15
    JNE_K = 0x55
    JGE_K = 0x35
    JGT_K = 0x25
    JLT_K = 0xA5
    JLE_K = 0xB5
    JLE_X = 0xBD
    JGT_X = 0x2D
    JSET_K = 0x45
    CALL = 0x85
    EXIT = 0x95


class Helper(IntEnum):
    MAP_LOOKUP_ELEM = 1
    SKB_STORE_BYTES = 9
    SKB_SET_TUNNEL_KEY = 21
    REDIRECT = 23
    SKB_LOAD_BYTES = 26
    SKB_CHANGE_PROTO = 31
    SKB_CHANGE_TAIL = 38
    SET_HASH_INVALID = 41  # bench/dataplane.py's hand-written pipeline
    GET_PRANDOM_U32 = 7
    SET_HASH = 48
    SKB_ADJUST_ROOM = 50
    REDIRECT_NEIGH = 152


class SkbField(IntEnum):
    """Offsets in struct __sk_buff."""

    LEN = 0
    MARK = 8
    PROTOCOL = 16  # skb->protocol, network byte order
    PRIORITY = 32
    DATA = 76  # the start of the linear data (direct packet access, reads only here)
    DATA_END = 80


PSEUDO_MAP_FD: Final = 1
TC_ACT_OK: Final = 0
TC_ACT_SHOT: Final = 2
TC_ACT_REDIRECT: Final = 7
BPF_F_TUNINFO_IPV6: Final = 1
BPF_ADJ_ROOM_MAC: Final = 1
# bpf_skb_adjust_room flags: outer IPv4 + UDP, then an inner Ethernet header of 14 bytes.
ADJ_ROOM_ENCAP_L3_IPV4: Final = 1 << 1
ADJ_ROOM_ENCAP_L4_UDP: Final = 1 << 4
ADJ_ROOM_ENCAP_L2_ETH: Final = 1 << 6
ADJ_ROOM_ENCAP_L2_SHIFT: Final = 56
# Outer IPv4 (20) + UDP (8) + VXLAN (8) + the inner Ethernet header (14).
ENCAP_ROOM: Final = 50
VXLAN_PORT_NUMBER: Final = 4789
# skb->protocol as a little-endian load of its network-order bytes.
PROTOCOL_IPV4_LE: Final = 0x0008
PROTOCOL_IPV6_LE: Final = 0xDD86


@dataclass
class Assembler:
    """Instructions with symbolic jump targets, resolved by `assemble()`."""

    items: list[tuple[int, int, int, int, int, str | None]] = field(default_factory=list)
    labels: dict[str, int] = field(default_factory=dict)

    def emit(
        self, op: Op, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0, to: str | None = None
    ) -> None:
        self.items.append((op, dst, src, off, imm, to))

    def label(self, name: str) -> None:
        assert name not in self.labels, name
        self.labels[name] = len(self.items)

    # A few readable shorthands.
    def mov(self, dst: Reg, imm: int) -> None:
        self.emit(Op.MOV_K, dst, imm=imm)

    def movx(self, dst: Reg, src: Reg) -> None:
        self.emit(Op.MOV_X, dst, src)

    def load32(self, dst: Reg, base: Reg, off: int) -> None:
        self.emit(Op.LDX_W, dst, base, off)

    def load16(self, dst: Reg, base: Reg, off: int) -> None:
        self.emit(Op.LDX_H, dst, base, off)

    def load8(self, dst: Reg, base: Reg, off: int) -> None:
        self.emit(Op.LDX_B, dst, base, off)

    def store32(self, base: Reg, off: int, src: Reg) -> None:
        self.emit(Op.STX_W, base, src, off)

    def call(self, helper: Helper) -> None:
        self.emit(Op.CALL, imm=helper)

    def jump(self, op: Op, dst: Reg, imm: int, to: str, src: Reg = Reg.R0) -> None:
        self.emit(op, dst, src, imm=imm, to=to)

    def alu(self, op: Op, dst: Reg, imm: int = 0, src: Reg = Reg.R0) -> None:
        # imm is signed in the encoding; 32-bit constants above 2^31 wrap to the same bits.
        self.emit(op, dst, src, imm=imm - (1 << 32) if imm >= 1 << 31 else imm)

    def load_map_fd(self, dst: Reg, fd: int) -> None:
        # A 16-byte instruction: the second half carries the upper 32 bits (0).
        self.emit(Op.LD_IMM64, dst, PSEUDO_MAP_FD, imm=fd)
        self.items.append((0, 0, 0, 0, 0, None))

    def assemble(self) -> bytes:
        out = bytearray()
        for index, (op, dst, src, off, imm, to) in enumerate(self.items):
            if to is not None:
                off = self.labels[to] - index - 1
            out += struct.pack("<BBhi", op, (src << 4) | dst, off, imm)
        return bytes(out)


# Tunnel map value: struct bpf_tunnel_key (44 bytes, what the helper takes) then ours:
# the settings the agent writes, then counters only the program writes.
TUNNEL_KEY_SIZE: Final = 44
VALUE_SNAPLEN: Final = 44
VALUE_FLAGS: Final = 48
VALUE_IFINDEX: Final = 52
VALUE_SETTINGS_SIZE: Final = 56  # what the agent writes and compares
# An entry the program encapsulates itself (docs/dataplane.md, "VXLAN in the program"):
# this bit in VALUE_FLAGS (never passed to bpf_skb_set_tunnel_key, which such an entry
# does not call), VALUE_IFINDEX the route's device, and the outer UDP source port range
# where an IPv4 entry has no use for the tunnel key's IPv6 local address bytes.
FLAG_ENCAP_IN_PROGRAM: Final = 1 << 16
VALUE_PORT_MIN: Final = 32
VALUE_PORT_COUNT: Final = 36
VALUE_UNCUT_PACKETS: Final = 56  # u64: copies dropped because they could not be cut
VALUE_UNCUT_BYTES: Final = 64  # u64: their lengths
# u64 pair: a group member's entry counts the copies placed on it; a group entry counts
# the copies it could not place (no healthy member).
VALUE_PLACED_PACKETS: Final = 72
VALUE_PLACED_BYTES: Final = 80
VALUE_SIZE: Final = 88
# A session whose target is a group of collectors (docs/elb.md, "Placement in the
# kernel"): its entry has FLAG_GROUP and, where a target's entry has the remote address,
# the key of its placement table's first chunk (VALUE_TABLE_BASE) and the key of its
# member 0 (VALUE_MEMBER_BASE). The program takes slot = flow hash % TABLE_SLOTS, reads
# the member number at byte slot % CHUNK_SLOTS of the chunk entry TABLE_BASE +
# slot / CHUNK_SLOTS, and continues with the entry MEMBER_BASE | number as if it were
# the session's target. FLAG_NO_MEMBER: no healthy member, every copy is counted and
# dropped. Keys below 2^31 are session marks (plan.MAX_KEY), so members and chunks use
# the upper half of the key space.
FLAG_GROUP: Final = 1 << 17
FLAG_NO_MEMBER: Final = 1 << 18
VALUE_TABLE_BASE: Final = 4
VALUE_MEMBER_BASE: Final = 8
CHUNK_SLOTS: Final = 64  # a power of two: the verifier then knows the byte is in bounds
MEMBER_KEY_FLAG: Final = 0x8000_0000
CHUNK_KEY_FLAG: Final = 0xC000_0000
MAP_MAX_ENTRIES: Final = 65536
# The per-CPU buffer that holds a copy's first snaplen bytes while it is rewritten.
SCRATCH_SIZE: Final = 1536
# A longer copy is first cut to this before it is rewritten (headers end well before).
PRECUT_LENGTH: Final = 1024
# bpf_skb_change_tail refuses to end a packet before its network header (at 14 here),
# its transport header, or (CHECKSUM_PARTIAL) its L4 checksum field.
ETHERNET_HEADER: Final = 14
# Stack slots of the mirror program (offsets from the frame pointer).
_STACK_KEY = -4
_STACK_ZERO = -8
_STACK_OFFSET = -12  # the L4 header offset while parsing; the IP base length when cutting
_STACK_LENGTH = -16  # the copy's length as it arrived
_STACK_HASH = -20  # the flow hash, set again when the copy's protocol is switched
_STACK_AS_IPV4 = -24  # 1: an IPv6 copy shorter than 54 bytes (see _cut)
_STACK_PLACE_KEY = -28  # a chunk's key, then a member's, while placing a group's copy
_STACK_BUFFER = -64  # 48 bytes for headers read while hashing
# 64 bytes: outer Ethernet, IPv4, UDP, VXLAN, then the inner Ethernet header (the copy's
# own, saved while hashing). Placed so that each field's store is aligned to its size,
# which the verifier demands on the stack.
_STACK_OUTER = -130
_STACK_OUTER_IP = _STACK_OUTER + ETHERNET_HEADER
_STACK_INNER_ETHERNET = _STACK_OUTER + 50
# Bytes the fast path of the hash reads directly: Ethernet + IPv4 (no options) + ports,
# Ethernet + IPv6 + ports.
_FAST_IPV4_BYTES = ETHERNET_HEADER + 20 + 4
_FAST_IPV6_BYTES = ETHERNET_HEADER + 40 + 4
# Multipliers of the flow hash (golden ratio; murmur3's finaliser).
_HASH_STEP = 0x9E3779B1
_FMIX1, _FMIX2 = 0x85EBCA6B, 0xC2B2AE35
# IPv6 extension headers walked to find the transport header, at most this many.
IPV6_EXTENSION_HEADERS_WALKED: Final = 6
# IP protocols whose first 4 transport bytes are the source and destination port.
PORT_PROTOCOLS: Final = (6, 17, 33, 132, 136)  # TCP, UDP, DCCP, SCTP, UDP-Lite


class ProgramKind(StrEnum):
    MIRROR = "mirror"  # at the copy peers' tc ingress: look up, cut, tunnel key, redirect
    PRIORITY_TO_MARK = "prio2mark"  # at vxtap-pr0's tc egress: key from priority to mark


def program(kind: ProgramKind, map_fd: int, scratch_fd: int = 0) -> bytes:
    if kind is ProgramKind.MIRROR:
        return mirror_program(map_fd, scratch_fd)
    return priority_to_mark_program()


def priority_to_mark_program() -> bytes:
    """skb->mark = skb->priority; skb->priority = 0; continue. Only copies pass here."""
    a = Assembler()
    a.load32(Reg.R2, Reg.R1, SkbField.PRIORITY)
    a.store32(Reg.R1, SkbField.MARK, Reg.R2)
    a.mov(Reg.R2, 0)
    a.store32(Reg.R1, SkbField.PRIORITY, Reg.R2)
    a.mov(Reg.R0, TC_ACT_OK)
    a.emit(Op.EXIT)
    return a.assemble()


def mirror_program(map_fd: int, scratch_fd: int = 0) -> bytes:
    """The session key is in skb->mark (see module docstring)."""
    a = Assembler()
    r0, r1, r2, r3, r4 = Reg.R0, Reg.R1, Reg.R2, Reg.R3, Reg.R4
    r6, r7, fp = Reg.R6, Reg.R7, Reg.FP
    a.movx(r6, r1)  # r6 = skb
    a.load32(r2, r6, SkbField.MARK)
    a.store32(fp, _STACK_KEY, r2)
    _lookup(a, map_fd, _STACK_KEY)  # first: the tunnel map is the program's map 0
    a.jump(Op.JEQ_K, r0, 0, "drop")
    a.movx(r7, r0)  # r7 = tunnel entry
    a.mov(r2, 0)
    a.store32(r6, SkbField.MARK, r2)
    a.store32(r6, SkbField.PRIORITY, r2)
    a.load32(r2, r6, SkbField.LEN)
    a.store32(fp, _STACK_LENGTH, r2)
    _flow_hash(a)  # skb->hash: before the cut, which may remove the ports
    _place(a, map_fd)
    _cut(a, scratch_fd)
    a.label("encapsulate")
    a.load32(r2, r7, VALUE_FLAGS)
    a.jump(Op.JSET_K, r2, FLAG_ENCAP_IN_PROGRAM, "encapsulate_here")
    a.movx(r1, r6)
    a.movx(r2, r7)
    a.mov(r3, TUNNEL_KEY_SIZE)
    a.load32(r4, r7, VALUE_FLAGS)
    a.call(Helper.SKB_SET_TUNNEL_KEY)
    a.jump(Op.JNE_K, r0, 0, "drop")
    a.load32(r1, r7, VALUE_IFINDEX)
    a.mov(r2, 0)
    a.call(Helper.REDIRECT)
    a.emit(Op.EXIT)
    a.label("encapsulate_here")
    _encapsulate(a)
    a.label("uncut")  # counted in the entry, then dropped: never longer than asked
    _count(a, VALUE_UNCUT_PACKETS, VALUE_UNCUT_BYTES)
    a.label("drop")
    a.mov(r0, TC_ACT_SHOT)
    a.emit(Op.EXIT)
    return a.assemble()


def _lookup(a: Assembler, map_fd: int, key_offset: int) -> None:
    """r0 := bpf_map_lookup_elem(map, fp + key_offset): the entry, or 0."""
    a.load_map_fd(Reg.R1, map_fd)
    a.movx(Reg.R2, Reg.FP)
    a.emit(Op.ADD_K, Reg.R2, imm=key_offset)
    a.call(Helper.MAP_LOOKUP_ELEM)


def _count(a: Assembler, packets: int, octets: int) -> None:
    """One more copy and its length (the stack's) in the entry at r7; atomic adds,
    as any CPU may count in the same entry. Clobbers r1."""
    a.mov(Reg.R1, 1)
    a.emit(Op.ATOMIC_DW, Reg.R7, Reg.R1, packets)
    a.load32(Reg.R1, Reg.FP, _STACK_LENGTH)
    a.emit(Op.ATOMIC_DW, Reg.R7, Reg.R1, octets)


def _place(a: Assembler, map_fd: int) -> None:
    """For a group entry: r7 := the member entry the flow's slot names (see FLAG_GROUP),
    counted there; without one the copy is counted in the group entry and dropped."""
    r0, r1, r2, r3, r7, fp = Reg.R0, Reg.R1, Reg.R2, Reg.R3, Reg.R7, Reg.FP
    a.load32(r2, r7, VALUE_FLAGS)
    a.jump(Op.JSET_K, r2, FLAG_GROUP, "group")
    a.emit(Op.JA, to="placed")
    a.label("group")
    a.jump(Op.JSET_K, r2, FLAG_NO_MEMBER, "unplaced")
    a.load32(r2, fp, _STACK_HASH)  # 32 bits, zero-extended
    a.emit(Op.MOD_K, r2, imm=TABLE_SLOTS)
    a.movx(r3, r2)
    a.emit(Op.RSH_K, r3, imm=CHUNK_SLOTS.bit_length() - 1)
    a.load32(r1, r7, VALUE_TABLE_BASE)
    a.emit(Op.ADD_X, r1, r3)
    a.store32(fp, _STACK_PLACE_KEY, r1)
    a.emit(Op.AND_K, r2, imm=CHUNK_SLOTS - 1)
    a.store32(fp, _STACK_OFFSET, r2)  # free until the cut sets it
    _lookup(a, map_fd, _STACK_PLACE_KEY)
    a.jump(Op.JEQ_K, r0, 0, "unplaced")
    a.load32(r2, fp, _STACK_OFFSET)
    a.emit(Op.AND_K, r2, imm=CHUNK_SLOTS - 1)  # the verifier's bound on the offset
    a.emit(Op.ADD_X, r0, r2)
    a.load8(r2, r0, 0)  # the member's number
    a.load32(r1, r7, VALUE_MEMBER_BASE)
    a.emit(Op.OR_X, r1, r2)
    a.store32(fp, _STACK_PLACE_KEY, r1)
    _lookup(a, map_fd, _STACK_PLACE_KEY)
    a.jump(Op.JEQ_K, r0, 0, "unplaced")
    a.movx(r7, r0)
    _count(a, VALUE_PLACED_PACKETS, VALUE_PLACED_BYTES)
    a.emit(Op.JA, to="placed")
    a.label("unplaced")
    _count(a, VALUE_PLACED_PACKETS, VALUE_PLACED_BYTES)
    a.mov(r0, TC_ACT_SHOT)
    a.emit(Op.EXIT)
    a.label("placed")


def group_value(*, table_base: int, member_base: int, snaplen: int, has_member: bool) -> bytes:
    """The map value of a (session, source) whose target is a group (see FLAG_GROUP)."""
    value = bytearray(VALUE_SIZE)
    struct.pack_into("<II", value, VALUE_TABLE_BASE, table_base, member_base)
    flags = FLAG_GROUP | (0 if has_member else FLAG_NO_MEMBER)
    struct.pack_into("<II", value, VALUE_SNAPLEN, snaplen, flags)
    return bytes(value)


def chunk_values(table: bytes) -> list[bytes]:
    """A placement table (one member number per slot) as map values of CHUNK_SLOTS slots."""
    return [
        table[start : start + CHUNK_SLOTS].ljust(VALUE_SIZE, b"\0")
        for start in range(0, len(table), CHUNK_SLOTS)
    ]


def _encapsulate(a: Assembler) -> None:
    """VXLAN over IPv4 in the program; r6 = skb, r7 = the entry. Drops on failure.

    One store writes all 64 bytes in front of the copy's IP header: an outer Ethernet
    header, IPv4, UDP, VXLAN and the inner Ethernet header (the copy's own, saved on the
    stack while hashing). The outer MAC addresses are zeros: bpf_redirect_neigh replaces
    that header from the neighbour entry, and it refuses a packet whose destination is a
    multicast address, which the copy's own destination (broadcast, multicast) may be."""
    r0, r1, r2, r3, r4, r5 = Reg.R0, Reg.R1, Reg.R2, Reg.R3, Reg.R4, Reg.R5
    r6, r7, r8, r9, fp = Reg.R6, Reg.R7, Reg.R8, Reg.R9, Reg.FP
    outer, ip = _STACK_OUTER, _STACK_OUTER_IP
    a.load32(r9, r6, SkbField.LEN)  # r9 = the inner frame's length
    a.movx(r1, r6)
    a.mov(r2, ENCAP_ROOM)
    a.mov(r3, BPF_ADJ_ROOM_MAC)
    a.mov(r4, ETHERNET_HEADER)
    a.emit(Op.LSH_K, r4, imm=ADJ_ROOM_ENCAP_L2_SHIFT)
    a.emit(Op.OR_K, r4, imm=ADJ_ROOM_ENCAP_L3_IPV4 | ADJ_ROOM_ENCAP_L4_UDP | ADJ_ROOM_ENCAP_L2_ETH)
    a.call(Helper.SKB_ADJUST_ROOM)
    a.jump(Op.JNE_K, r0, 0, "drop")
    a.mov(r2, 0)
    a.emit(Op.STX_H, fp, r2, outer)
    a.emit(Op.STX_DW, fp, r2, outer + 2)
    a.emit(Op.STX_H, fp, r2, outer + 10)
    a.mov(r2, PROTOCOL_IPV4_LE)
    a.emit(Op.STX_H, fp, r2, outer + 12)
    # IPv4: version 4, 20 bytes, TOS 0, total length; a random id, no DF (the snap
    # length is capped to the route's MTU, so nothing is fragmented); TTL; UDP. Each
    # 32-bit word is also added to r8: the header checksum is their one's-complement sum
    # (in the stored byte order, which the sum does not depend on).
    a.movx(r2, r9)
    a.emit(Op.ADD_K, r2, imm=ENCAP_ROOM - ETHERNET_HEADER)
    a.emit(Op.TO_BE, r2, imm=16)
    a.emit(Op.LSH_K, r2, imm=16)
    a.emit(Op.OR_K, r2, imm=0x45)
    a.store32(fp, ip, r2)
    a.movx(r8, r2)
    a.call(Helper.GET_PRANDOM_U32)
    a.emit(Op.AND_K, r0, imm=0xFFFF)
    a.store32(fp, ip + 4, r0)
    a.emit(Op.ADD_X, r8, r0)
    a.load8(r2, r7, 21)  # the tunnel key's TTL
    a.emit(Op.OR_K, r2, imm=17 << 8)
    a.store32(fp, ip + 8, r2)  # checksum 0 until computed below
    a.emit(Op.ADD_X, r8, r2)
    for offset, field_ in ((12, 28), (16, 4)):  # local, remote (host order in the entry)
        a.load32(r2, r7, field_)
        a.emit(Op.TO_BE, r2, imm=32)
        a.store32(fp, ip + offset, r2)
        a.emit(Op.ADD_X, r8, r2)
    for _ in range(3):  # fold the (at most 35-bit) sum to 16 bits
        a.movx(r1, r8)
        a.emit(Op.RSH_K, r1, imm=16)
        a.emit(Op.AND_K, r8, imm=0xFFFF)
        a.emit(Op.ADD_X, r8, r1)
    a.emit(Op.XOR_K, r8, imm=0xFFFF)
    a.emit(Op.STX_H, fp, r8, ip + 10)
    # UDP: the source port from the flow hash, like the VXLAN driver's
    # udp_flow_src_port (hash x count >> 32, within the namespace's port range);
    # destination 4789; length; checksum 0 (allowed over IPv4, as the VXLAN device sends).
    a.load32(r1, fp, _STACK_HASH)
    a.load32(r3, r7, VALUE_PORT_COUNT)
    a.emit(Op.MUL_X, r1, r3)
    a.emit(Op.RSH_K, r1, imm=32)
    a.load32(r3, r7, VALUE_PORT_MIN)
    a.emit(Op.ADD_X, r1, r3)
    a.emit(Op.TO_BE, r1, imm=16)
    a.mov(r3, VXLAN_PORT_NUMBER)
    a.emit(Op.TO_BE, r3, imm=16)
    a.emit(Op.LSH_K, r3, imm=16)
    a.emit(Op.OR_X, r1, r3)
    a.store32(fp, ip + 20, r1)
    a.movx(r2, r9)
    a.emit(Op.ADD_K, r2, imm=16)
    a.emit(Op.TO_BE, r2, imm=16)
    a.store32(fp, ip + 24, r2)
    a.mov(r2, 0x08)  # VXLAN flags: a valid VNI
    a.store32(fp, ip + 28, r2)
    a.load32(r2, r7, 0)  # the VNI, in the top 24 bits
    a.emit(Op.LSH_K, r2, imm=8)
    a.emit(Op.TO_BE, r2, imm=32)
    a.store32(fp, ip + 32, r2)
    a.movx(r1, r6)
    a.mov(r2, 0)
    a.movx(r3, fp)
    a.emit(Op.ADD_K, r3, imm=outer)
    a.mov(r4, ETHERNET_HEADER + ENCAP_ROOM)
    a.mov(r5, 0)
    a.call(Helper.SKB_STORE_BYTES)
    a.jump(Op.JNE_K, r0, 0, "drop")
    a.load32(r1, r7, VALUE_IFINDEX)
    a.mov(r2, 0)  # no next hop given: the kernel looks the target up in the FIB
    a.mov(r3, 0)
    a.mov(r4, 0)
    a.call(Helper.REDIRECT_NEIGH)
    a.emit(Op.EXIT)


def _load_bytes(a: Assembler, offset: int | None, length: int, to: int = _STACK_BUFFER) -> None:
    """bpf_skb_load_bytes(skb, offset (None: r2 as set), fp + to, length); on failure
    (a shorter packet) the hash keeps what it has so far."""
    if offset is not None:
        a.mov(Reg.R2, offset)
    a.movx(Reg.R1, Reg.R6)
    a.movx(Reg.R3, Reg.FP)
    a.emit(Op.ADD_K, Reg.R3, imm=to)
    a.mov(Reg.R4, length)
    a.call(Helper.SKB_LOAD_BYTES)
    a.jump(Op.JNE_K, Reg.R0, 0, "hash_done")


def _mix(a: Assembler, acc: Reg, word: Reg, tmp: Reg) -> None:
    """acc = (acc ^ word) * K; acc ^= acc >> 16 (32-bit)."""
    a.alu(Op.XOR32_X, acc, src=word)
    a.alu(Op.MUL32_K, acc, _HASH_STEP)
    a.alu(Op.MOV32_X, tmp, src=acc)
    a.alu(Op.RSH32_K, tmp, 16)
    a.alu(Op.XOR32_X, acc, src=tmp)


def _ordered(a: Assembler, low: Reg, high: Reg, tmp: Reg, name: str) -> None:
    """Swap so that low <= high: the same pair both ways of a flow."""
    a.emit(Op.JLE_X, low, high, to=name)
    a.movx(tmp, low)
    a.movx(low, high)
    a.movx(high, tmp)
    a.label(name)


def _mix_ports(a: Assembler, base: Reg, offset: int, name: str) -> None:
    """Mix the two ports at base + offset into r9, in order (r0, r1, r3, r4 used)."""
    r1, r3 = Reg.R1, Reg.R3
    a.load16(r1, base, offset)
    a.load16(r3, base, offset + 2)
    _ordered(a, r1, r3, Reg.R4, name)
    a.emit(Op.LSH_K, r1, imm=16)
    a.emit(Op.OR_X, r1, r3)
    _mix(a, Reg.R9, r1, Reg.R0)


def _jump_if_ports(a: Assembler, protocol: Reg, to: str) -> None:
    for number in PORT_PROTOCOLS:
        a.jump(Op.JEQ_K, protocol, number, to)


def _fast_flow_hash(a: Assembler) -> None:
    """The flow hash of the common copy without a helper call, read directly from the
    linear data: IPv4 without options and not a fragment, IPv6 without extension
    headers. Mixes exactly what the general path below mixes, in the same order (a
    flow's hash must not depend on the path its packets took); anything else, or
    headers not all in the linear data, goes to "hash_slow" with r9 still 0. Saves the
    copy's Ethernet header on the stack for the encapsulation, as the general path does.
    """
    r0, r1, r2, r3, r4, r8, r9, fp = (
        Reg.R0, Reg.R1, Reg.R2, Reg.R3, Reg.R4, Reg.R8, Reg.R9, Reg.FP
    )  # fmt: skip
    ethernet = _STACK_INNER_ETHERNET
    a.load32(r2, Reg.R6, SkbField.DATA)
    a.load32(r3, Reg.R6, SkbField.DATA_END)
    a.movx(r4, r2)
    a.emit(Op.ADD_K, r4, imm=_FAST_IPV4_BYTES)
    a.emit(Op.JGT_X, r4, r3, to="hash_slow")
    a.emit(Op.LDX_DW, r1, r2, 0)
    a.emit(Op.STX_DW, fp, r1, ethernet)
    a.load32(r1, r2, 8)
    a.store32(fp, ethernet + 8, r1)
    a.load16(r1, r2, 12)
    a.emit(Op.STX_H, fp, r1, ethernet + 12)
    a.jump(Op.JEQ_K, r1, PROTOCOL_IPV4_LE, "fast_ipv4")
    a.jump(Op.JNE_K, r1, PROTOCOL_IPV6_LE, "hash_done")  # not IP: nothing to mix

    a.movx(r4, r2)
    a.emit(Op.ADD_K, r4, imm=_FAST_IPV6_BYTES)
    a.emit(Op.JGT_X, r4, r3, to="hash_slow")
    a.load8(r8, r2, ETHERNET_HEADER + 6)  # next header
    for extension in (0, 43, 60, 51, 44):  # any extension header: the general path
        a.jump(Op.JEQ_K, r8, extension, "hash_slow")
    for acc, first in ((r1, 8), (r3, 24)):  # source, destination: one word each
        a.mov(acc, 0)
        for word in range(4):
            a.load32(r4, r2, ETHERNET_HEADER + first + 4 * word)
            _mix(a, acc, r4, r0)
    _ordered(a, r1, r3, r4, "fast_ipv6_ordered")
    _mix(a, r9, r1, r0)
    _mix(a, r9, r3, r0)
    _mix(a, r9, r8, r0)
    _jump_if_ports(a, r8, "fast_ipv6_ports")
    a.emit(Op.JA, to="hash_done")
    a.label("fast_ipv6_ports")
    _mix_ports(a, r2, ETHERNET_HEADER + 40, "fast_ipv6_ports_ordered")
    a.emit(Op.JA, to="hash_done")

    a.label("fast_ipv4")
    a.load8(r1, r2, ETHERNET_HEADER)
    a.jump(Op.JNE_K, r1, 0x45, "hash_slow")  # options: the general path
    a.load16(r1, r2, ETHERNET_HEADER + 6)  # flags and offset, as a little-endian load
    a.jump(Op.JSET_K, r1, 0xFF3F, "hash_slow")  # a fragment: the general path
    a.load32(r1, r2, ETHERNET_HEADER + 12)
    a.load32(r3, r2, ETHERNET_HEADER + 16)
    _ordered(a, r1, r3, r4, "fast_ipv4_ordered")
    _mix(a, r9, r1, r0)
    _mix(a, r9, r3, r0)
    a.load8(r8, r2, ETHERNET_HEADER + 9)  # protocol
    _mix(a, r9, r8, r0)
    _jump_if_ports(a, r8, "fast_ipv4_ports")
    a.emit(Op.JA, to="hash_done")
    a.label("fast_ipv4_ports")
    _mix_ports(a, r2, ETHERNET_HEADER + 20, "fast_ipv4_ports_ordered")
    a.emit(Op.JA, to="hash_done")


def _flow_hash(a: Assembler) -> None:
    """skb->hash := a symmetric hash of the inner flow (r9 accumulates it).

    Addresses and ports are each put in order first, so both directions hash the same;
    IPv6 addresses are hashed to one word each and those ordered. Fragments hash without
    ports (IPv4 MF or offset: addresses and protocol; an IPv6 fragment header: addresses),
    so that every fragment of a datagram goes the same way; other protocols by addresses
    and protocol.
    The IPv6 flow label is left out: each direction of a flow has its own."""
    r0, r1, r2, r3, r8, r9, fp = Reg.R0, Reg.R1, Reg.R2, Reg.R3, Reg.R8, Reg.R9, Reg.FP
    buf = _STACK_BUFFER
    a.mov(r9, 0)
    _fast_flow_hash(a)
    # The general path: each header read with bpf_skb_load_bytes (the headers need not
    # be in the linear data), IPv6 extension headers walked, fragments without ports.
    a.label("hash_slow")
    _load_bytes(a, 0, ETHERNET_HEADER, to=_STACK_INNER_ETHERNET)
    a.load16(r2, fp, _STACK_INNER_ETHERNET + 12)
    a.jump(Op.JEQ_K, r2, PROTOCOL_IPV4_LE, "hash_ipv4")
    a.jump(Op.JEQ_K, r2, PROTOCOL_IPV6_LE, "hash_ipv6")
    a.emit(Op.JA, to="hash_done")

    a.label("hash_ipv4")
    _load_bytes(a, ETHERNET_HEADER, 20)
    a.load32(r1, fp, buf + 12)
    a.load32(r2, fp, buf + 16)
    _ordered(a, r1, r2, r3, "ipv4_ordered")
    _mix(a, r9, r1, r0)
    _mix(a, r9, r2, r0)
    a.load8(r8, fp, buf + 9)  # protocol
    _mix(a, r9, r8, r0)
    a.load16(r2, fp, buf + 6)  # flags and offset, as a little-endian load
    a.jump(Op.JSET_K, r2, 0xFF3F, "hash_done")  # MF or an offset: a fragment
    a.load8(r2, fp, buf)
    a.emit(Op.AND_K, r2, imm=0x0F)
    a.emit(Op.LSH_K, r2, imm=2)
    a.emit(Op.ADD_K, r2, imm=ETHERNET_HEADER)  # r2 = transport header offset
    a.emit(Op.JA, to="hash_ports")

    a.label("hash_ipv6")
    _load_bytes(a, ETHERNET_HEADER, 40)
    for acc, first in ((r1, 8), (r2, 24)):  # source, destination: one word each
        a.mov(acc, 0)
        for word in range(4):
            a.load32(r3, fp, buf + first + 4 * word)
            _mix(a, acc, r3, r0)
    _ordered(a, r1, r2, r3, "ipv6_ordered")
    _mix(a, r9, r1, r0)
    _mix(a, r9, r2, r0)
    a.load8(r8, fp, buf + 6)  # next header
    a.mov(r2, ETHERNET_HEADER + 40)
    a.store32(fp, _STACK_OFFSET, r2)
    for walked in range(IPV6_EXTENSION_HEADERS_WALKED):
        step = f"ext{walked}"
        a.jump(Op.JEQ_K, r8, 44, "hash_done")  # fragment header: addresses only
        for options in (0, 43, 60):  # hop-by-hop, routing, destination options
            a.jump(Op.JEQ_K, r8, options, f"{step}_8")
        a.jump(Op.JEQ_K, r8, 51, f"{step}_4")  # authentication header: 4-byte units
        a.emit(Op.JA, to="ipv6_transport")
        for unit, extra, shift in ((8, 1, 3), (4, 2, 2)):
            a.label(f"{step}_{unit}")
            a.load32(r2, fp, _STACK_OFFSET)
            _load_bytes(a, None, 2)
            a.load8(r8, fp, buf)  # its next header
            a.load8(r3, fp, buf + 1)  # its length
            a.emit(Op.ADD_K, r3, imm=extra)
            a.emit(Op.LSH_K, r3, imm=shift)
            a.load32(r2, fp, _STACK_OFFSET)
            a.emit(Op.ADD_X, r2, r3)
            a.store32(fp, _STACK_OFFSET, r2)
            a.emit(
                Op.JA,
                to=f"ext{walked + 1}"
                if walked + 1 < IPV6_EXTENSION_HEADERS_WALKED
                else "hash_done",
            )
        if walked + 1 < IPV6_EXTENSION_HEADERS_WALKED:
            a.label(f"ext{walked + 1}")
    a.label("ipv6_transport")
    _mix(a, r9, r8, r0)
    a.load32(r2, fp, _STACK_OFFSET)

    a.label("hash_ports")  # r8 = protocol, r2 = transport header offset
    _jump_if_ports(a, r8, "load_ports")
    a.emit(Op.JA, to="hash_done")
    a.label("load_ports")
    _load_bytes(a, None, 4)
    _mix_ports(a, fp, buf, "ports_ordered")

    a.label("hash_done")  # murmur3's finaliser, then never 0 (VXLAN would hash the MACs)
    for multiplier in (_FMIX1, _FMIX2, None):
        a.alu(Op.MOV32_X, r0, src=r9)
        a.alu(Op.RSH32_K, r0, 16 if multiplier != _FMIX2 else 13)
        a.alu(Op.XOR32_X, r9, src=r0)
        if multiplier is not None:
            a.alu(Op.MUL32_K, r9, multiplier)
    a.alu(Op.OR32_K, r9, 1)
    a.store32(fp, _STACK_HASH, r9)
    a.movx(r1, Reg.R6)
    a.movx(r2, r9)
    a.call(Helper.SET_HASH)


def _cut(a: Assembler, scratch_fd: int) -> None:
    """Cut the copy to the entry's snaplen exactly; jumps to "encapsulate" or "uncut"."""
    r0, r1, r2, r3, r4, r5 = Reg.R0, Reg.R1, Reg.R2, Reg.R3, Reg.R4, Reg.R5
    r6, r7, r8, r9, fp = Reg.R6, Reg.R7, Reg.R8, Reg.R9, Reg.FP
    a.load32(r8, r7, VALUE_SNAPLEN)
    a.load32(r2, r6, SkbField.LEN)
    a.emit(Op.JLE_X, r2, r8, to="encapsulate")  # short enough already
    # The IP header's base length: the VXLAN device drops an inner frame that does not
    # hold Ethernet + this much (skb_vlan_inet_prepare, Linux 6.10+), and
    # bpf_skb_adjust_room keeps it behind the Ethernet header.
    a.load32(r2, r6, SkbField.PROTOCOL)
    a.mov(r3, 20)
    a.jump(Op.JEQ_K, r2, PROTOCOL_IPV4_LE, "cut_base")
    a.mov(r3, 40)
    a.jump(Op.JEQ_K, r2, PROTOCOL_IPV6_LE, "cut_base")
    a.emit(Op.JA, to="uncut")
    a.label("cut_base")
    a.store32(fp, _STACK_OFFSET, r3)
    a.mov(r2, 0)
    a.store32(fp, _STACK_AS_IPV4, r2)
    a.emit(Op.ADD_K, r3, imm=ETHERNET_HEADER)
    a.emit(Op.JLE_X, r3, r8, to="cut_plain")
    # Shorter than Ethernet + IP header: the VXLAN device would drop it. An IPv6 copy of
    # 34-53 bytes leaves as what the kernel takes for IPv4 (its metadata only: the bytes
    # stay the frame's own), which needs Ethernet + 20; anything shorter cannot be sent.
    a.jump(Op.JLT_K, r8, ETHERNET_HEADER + 20, "uncut")
    a.jump(Op.JNE_K, r3, ETHERNET_HEADER + 40, "uncut")
    a.mov(r2, 1)
    a.store32(fp, _STACK_AS_IPV4, r2)
    a.emit(Op.JA, to="cut_rewrite")
    a.label("cut_plain")
    a.movx(r1, r6)
    a.movx(r2, r8)
    a.mov(r3, 0)
    a.call(Helper.SKB_CHANGE_TAIL)
    a.jump(Op.JEQ_K, r0, 0, "encapsulate")
    # The kernel refused: the cut ends inside its headers. Rewrite the copy instead.
    a.label("cut_rewrite")
    a.jump(Op.JGT_K, r8, SCRATCH_SIZE, "uncut")
    a.mov(r2, 0)
    a.store32(fp, _STACK_ZERO, r2)
    _lookup(a, scratch_fd, _STACK_ZERO)
    a.jump(Op.JEQ_K, r0, 0, "uncut")
    a.movx(r9, r0)  # r9 = this CPU's buffer
    # 1. Save the first snaplen bytes: what the copy will carry.
    a.movx(r1, r6)
    a.mov(r2, 0)
    a.movx(r3, r9)
    a.movx(r4, r8)
    a.call(Helper.SKB_LOAD_BYTES)
    a.jump(Op.JNE_K, r0, 0, "uncut")
    # bpf_skb_adjust_room moves at most 4095 bytes: a jumbo frame is first cut to a
    # length that still holds its headers.
    a.load32(r2, r6, SkbField.LEN)
    a.jump(Op.JLE_K, r2, PRECUT_LENGTH, "cut_pop")
    a.movx(r1, r6)
    a.mov(r2, PRECUT_LENGTH)
    a.mov(r3, 0)
    a.call(Helper.SKB_CHANGE_TAIL)
    a.jump(Op.JNE_K, r0, 0, "uncut")
    a.label("cut_pop")
    a.load32(r3, fp, _STACK_OFFSET)
    # 2. Remove bytes behind the Ethernet header down to 14 + base: the kernel keeps the
    # transport header and checksum start where they were in memory, so their offsets
    # shrink by as much (they end up at or before 14 + base).
    a.load32(r2, r6, SkbField.LEN)
    a.emit(Op.ADD_K, r3, imm=ETHERNET_HEADER)
    a.emit(Op.JLE_X, r2, r3, to="cut_grow")
    a.emit(Op.SUB_X, r2, r3)
    a.emit(Op.NEG, r2)
    _adjust_room(a)
    # 3. Make it 2 x (14 + base) + 2 long (zeros), then remove base + 16 bytes the same
    # way: every header offset is now before the data (ignored), CHECKSUM_PARTIAL gone
    # (the kernel drops it when the checksum start leaves the data).
    a.label("cut_grow")
    a.load32(r2, fp, _STACK_OFFSET)
    a.emit(Op.LSH_K, r2, imm=1)
    a.emit(Op.ADD_K, r2, imm=2 * ETHERNET_HEADER + 2)
    a.movx(r1, r6)
    a.mov(r3, 0)
    a.call(Helper.SKB_CHANGE_TAIL)
    a.jump(Op.JNE_K, r0, 0, "uncut")
    a.load32(r2, fp, _STACK_OFFSET)
    a.emit(Op.ADD_K, r2, imm=ETHERNET_HEADER + 2)
    a.emit(Op.NEG, r2)
    _adjust_room(a)
    # (IPv6 copies of 34-53 bytes: skb->protocol := IPv4, which removes 20 more bytes
    # behind Ethernet and clears the hash, so the hash is set again.)
    a.load32(r2, fp, _STACK_AS_IPV4)
    a.jump(Op.JEQ_K, r2, 0, "cut_length")
    a.movx(r1, r6)
    a.mov(r2, PROTOCOL_IPV4_LE)
    a.mov(r3, 0)
    a.call(Helper.SKB_CHANGE_PROTO)
    a.jump(Op.JNE_K, r0, 0, "uncut")
    a.movx(r1, r6)
    a.load32(r2, fp, _STACK_HASH)
    a.call(Helper.SET_HASH)
    a.label("cut_length")
    # 4. Now only the network header (at 14) bounds the length: set it, put the bytes back.
    a.movx(r1, r6)
    a.movx(r2, r8)
    a.mov(r3, 0)
    a.call(Helper.SKB_CHANGE_TAIL)
    a.jump(Op.JNE_K, r0, 0, "uncut")
    a.movx(r1, r6)
    a.mov(r2, 0)
    a.movx(r3, r9)
    a.movx(r4, r8)
    a.mov(r5, 0)
    a.call(Helper.SKB_STORE_BYTES)
    a.jump(Op.JNE_K, r0, 0, "uncut")
    a.emit(Op.JA, to="encapsulate")


def _adjust_room(a: Assembler) -> None:
    """bpf_skb_adjust_room(skb, r2, BPF_ADJ_ROOM_MAC, 0); "uncut" on failure."""
    a.movx(Reg.R1, Reg.R6)
    a.mov(Reg.R3, BPF_ADJ_ROOM_MAC)
    a.mov(Reg.R4, 0)
    a.call(Helper.SKB_ADJUST_ROOM)
    a.jump(Op.JNE_K, Reg.R0, 0, "uncut")


def program_version(kind: ProgramKind) -> str:
    """Identifies a program's code (map fds excluded)."""
    return hashlib.sha256(program(kind, 0, 0)).hexdigest()[:8]


def tunnel_value(
    *,
    vni: int,
    remote: str,
    local: str | None,
    snaplen: int,
    ifindex: int,
    ttl: int = 64,
    ports: tuple[int, int] | None = None,
) -> bytes:
    """The map value for one (session, source): struct bpf_tunnel_key + ours.

    IPv4 addresses go in host byte order (the helper converts), IPv6 as network bytes.
    With `ports` (the outer UDP source port range, first and last) the program
    encapsulates itself and sends out of `ifindex`, the route's device: IPv4 remote
    and local addresses only.
    """
    if ports is not None:
        outer = ipaddress.ip_address(remote), ipaddress.ip_address(local or "::")
        if outer[0].version != 4 or outer[1].version != 4:
            raise ValueError("encapsulation in the program takes IPv4 remote and local addresses")
        value = bytearray(VALUE_SIZE)
        struct.pack_into("<II", value, 0, vni, int(outer[0]))
        value[21] = ttl
        struct.pack_into("<III", value, 28, int(outer[1]), ports[0], ports[1] - ports[0] + 1)
        struct.pack_into("<III", value, VALUE_SNAPLEN, snaplen, FLAG_ENCAP_IN_PROGRAM, ifindex)
        return bytes(value)
    remote_ip = ipaddress.ip_address(remote)
    local_ip = ipaddress.ip_address(local) if local else None
    value = bytearray(VALUE_SIZE)
    struct.pack_into("<I", value, 0, vni)
    ipv6 = remote_ip.version == 6
    if ipv6:
        value[4:20] = remote_ip.packed
        if local_ip is not None and local_ip.version == 6:
            value[28:44] = local_ip.packed
    else:
        struct.pack_into("<I", value, 4, int(remote_ip))
        if local_ip is not None and local_ip.version == 4:
            struct.pack_into("<I", value, 28, int(local_ip))
    value[21] = ttl
    struct.pack_into(
        "<III", value, VALUE_SNAPLEN, snaplen, BPF_F_TUNINFO_IPV6 if ipv6 else 0, ifindex
    )
    return bytes(value)
