"""The mirror's eBPF program, hand-assembled, and the few bpf(2) calls it needs.

Why by hand: the agent must not need clang, kernel headers or libbpf at run time
(a user's host has none of them), and the program is ~500 straight-line
instructions whose logic fits on a page. A tiny assembler with named opcodes
and labels keeps it readable; there is no maintained pure-Python eBPF
assembler to depend on. The verifier checks the result at load time.

What the program does, at tc ingress of a copy device's peer (direct action):
  key = skb->mark                                     -- set by nft before `dup` (on the
                                                         priority path moved there by a
                                                         second tiny program at tc egress)
  t = tunnels[key]            or drop                 -- one entry per (session, source)
  skb->mark = skb->priority = 0                       -- the copy must not steer routing
  cut to t.snaplen; if the kernel refuses (shorter than the headers), try the
  next length of a ladder; never send an uncut packet longer than asked
  invalidate skb->hash                                -- VXLAN's source port then comes
                                                         from the symmetric flow hash
  bpf_skb_set_tunnel_key(t.key: VNI, remote, local, ttl)
  redirect to the VXLAN device (t.ifindex)
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import hashlib
import ipaddress
import os
import platform
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Final

# --- bpf(2) ---

# bpf(2)'s number differs by architecture (the eBPF program itself does not).
BPF_SYSCALL_BY_MACHINE: Final = {"x86_64": 321, "aarch64": 280}
MACHINE: Final = platform.machine()


def bpf_syscall_number(machine: str) -> int:
    """bpf(2)'s number on `machine` (`platform.machine()`); ValueError naming it otherwise."""
    number = BPF_SYSCALL_BY_MACHINE.get(machine)
    if number is None:
        supported = " and ".join(BPF_SYSCALL_BY_MACHINE)
        raise ValueError(f"unsupported CPU architecture {machine!r}: vxtap supports {supported}")
    return number


_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.syscall.restype = ctypes.c_long


class Cmd(IntEnum):
    MAP_CREATE = 0
    MAP_LOOKUP_ELEM = 1
    MAP_UPDATE_ELEM = 2
    MAP_DELETE_ELEM = 3
    MAP_GET_NEXT_KEY = 4
    PROG_LOAD = 5
    PROG_GET_FD_BY_ID = 13
    MAP_GET_FD_BY_ID = 14
    OBJ_GET_INFO_BY_FD = 15


class BpfError(OSError):
    pass


def bpf(cmd: Cmd, attr: bytearray) -> int:
    try:
        number = bpf_syscall_number(MACHINE)
    except ValueError as error:
        raise BpfError(errno.ENOSYS, str(error)) from None
    buf = (ctypes.c_char * len(attr)).from_buffer(attr)
    result = int(_libc.syscall(number, int(cmd), buf, len(attr)))
    if result < 0:
        code = ctypes.get_errno()
        raise BpfError(code, f"bpf({cmd.name}): {os.strerror(code)}")
    return result


def _addr(buf: ctypes.Array[ctypes.c_char]) -> int:
    return ctypes.addressof(buf)


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
    LDX_W = 0x61  # BPF_LDX | BPF_MEM | BPF_W
    STX_W = 0x63  # BPF_STX | BPF_MEM | BPF_W
    MOV_K = 0xB7  # BPF_ALU64 | BPF_MOV | BPF_K
    MOV_X = 0xBF  # BPF_ALU64 | BPF_MOV | BPF_X
    ADD_K = 0x07  # BPF_ALU64 | BPF_ADD | BPF_K
    JA = 0x05
    JEQ_K = 0x15
    JNE_K = 0x55
    JGE_K = 0x35
    JLE_K = 0xB5
    JLE_X = 0xBD
    CALL = 0x85
    EXIT = 0x95


class Helper(IntEnum):
    MAP_LOOKUP_ELEM = 1
    SKB_SET_TUNNEL_KEY = 21
    REDIRECT = 23
    SKB_CHANGE_TAIL = 38
    SET_HASH_INVALID = 41


class SkbField(IntEnum):
    """Offsets in struct __sk_buff."""

    LEN = 0
    MARK = 8
    PRIORITY = 32


PSEUDO_MAP_FD: Final = 1
TC_ACT_OK: Final = 0
TC_ACT_SHOT: Final = 2
BPF_PROG_TYPE_SCHED_CLS: Final = 3
BPF_MAP_TYPE_HASH: Final = 1
BPF_F_NO_PREALLOC: Final = 1
BPF_F_TUNINFO_IPV6: Final = 1


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

    def store32(self, base: Reg, off: int, src: Reg) -> None:
        self.emit(Op.STX_W, base, src, off)

    def call(self, helper: Helper) -> None:
        self.emit(Op.CALL, imm=helper)

    def jump(self, op: Op, dst: Reg, imm: int, to: str, src: Reg = Reg.R0) -> None:
        self.emit(op, dst, src, imm=imm, to=to)

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


# Tunnel map value: struct bpf_tunnel_key (44 bytes, what the helper takes) then ours.
TUNNEL_KEY_SIZE: Final = 44
VALUE_SNAPLEN: Final = 44
VALUE_FLAGS: Final = 48
VALUE_IFINDEX: Final = 52
VALUE_SIZE: Final = 56
MAP_MAX_ENTRIES: Final = 65536
# When the kernel refuses to cut below the headers (bpf_skb_change_tail's minimum is
# the transport header, or the end of the L4 checksum for CHECKSUM_PARTIAL), the copy
# is cut to the first of these that it accepts: headers stay whole, as with tcpdump -s.
# Past the ladder the copy is dropped, never sent uncut.
TRUNCATION_LADDER: Final = (*range(34, 130, 2), 160, 192, 256)


class ProgramKind(StrEnum):
    MIRROR = "mirror"  # at the copy peers' tc ingress: look up, cut, tunnel key, redirect
    PRIORITY_TO_MARK = "prio2mark"  # at vxtap-pr0's tc egress: key from priority to mark


def program(kind: ProgramKind, map_fd: int) -> bytes:
    if kind is ProgramKind.MIRROR:
        return mirror_program(map_fd)
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


def mirror_program(map_fd: int) -> bytes:
    """The session key is in skb->mark (see module docstring)."""
    a = Assembler()
    r0, r1, r2, r3, r4, r6, r7, r8 = (
        Reg.R0,
        Reg.R1,
        Reg.R2,
        Reg.R3,
        Reg.R4,
        Reg.R6,
        Reg.R7,
        Reg.R8,
    )
    a.movx(r6, r1)  # r6 = skb
    a.load32(r2, r6, SkbField.MARK)
    a.store32(Reg.FP, -4, r2)  # key on the stack
    a.load_map_fd(r1, map_fd)
    a.movx(r2, Reg.FP)
    a.emit(Op.ADD_K, r2, imm=-4)
    a.call(Helper.MAP_LOOKUP_ELEM)
    a.jump(Op.JEQ_K, r0, 0, "drop")
    a.movx(r7, r0)  # r7 = tunnel entry
    a.mov(r2, 0)
    a.store32(r6, SkbField.MARK, r2)
    a.store32(r6, SkbField.PRIORITY, r2)
    a.load32(r8, r7, VALUE_SNAPLEN)
    a.load32(r2, r6, SkbField.LEN)
    a.emit(Op.JLE_X, r2, r8, to="encapsulate")  # short enough already
    a.movx(r1, r6)
    a.movx(r2, r8)
    a.mov(r3, 0)
    a.call(Helper.SKB_CHANGE_TAIL)
    a.jump(Op.JEQ_K, r0, 0, "encapsulate")
    for length in TRUNCATION_LADDER:
        skip = f"not_{length}"
        a.jump(Op.JGE_K, r8, length, skip)  # only lengths above the asked one
        a.load32(r2, r6, SkbField.LEN)
        a.jump(Op.JLE_K, r2, length, "encapsulate")  # not longer than this: leave as is
        a.movx(r1, r6)
        a.mov(r2, length)
        a.mov(r3, 0)
        a.call(Helper.SKB_CHANGE_TAIL)
        a.jump(Op.JEQ_K, r0, 0, "encapsulate")
        a.label(skip)
    a.emit(Op.JA, to="drop")
    a.label("encapsulate")
    a.movx(r1, r6)
    a.call(Helper.SET_HASH_INVALID)
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
    a.label("drop")
    a.mov(r0, TC_ACT_SHOT)
    a.emit(Op.EXIT)
    return a.assemble()


def program_version(kind: ProgramKind) -> str:
    """Identifies a program's code (map fd excluded)."""
    return hashlib.sha256(program(kind, 0)).hexdigest()[:8]


def load_program(insns: bytes, name: str) -> int:
    """BPF_PROG_LOAD as SCHED_CLS; on a verifier refusal the error carries its log.

    Loaded without a log first: a verbose log of a long program can overflow any fixed
    buffer (ENOSPC) even when the program is fine."""
    try:
        return _prog_load(insns, name, log_size=0)
    except BpfError:
        return _prog_load(insns, name, log_size=1 << 22)  # again, for the verifier's log


def _prog_load(insns: bytes, name: str, *, log_size: int) -> int:
    code = ctypes.create_string_buffer(insns, len(insns))
    license_ = ctypes.create_string_buffer(b"GPL")
    log = ctypes.create_string_buffer(max(log_size, 1))
    attr = bytearray(128)
    struct.pack_into(
        "<IIQQIIQ",
        attr,
        0,
        BPF_PROG_TYPE_SCHED_CLS,
        len(insns) // 8,
        _addr(code),
        _addr(license_),
        1 if log_size else 0,
        log_size,
        _addr(log) if log_size else 0,
    )
    attr[48 : 48 + 16] = name.encode()[:15].ljust(16, b"\0")
    try:
        return bpf(Cmd.PROG_LOAD, attr)
    except BpfError as error:
        if not log_size:
            raise
        text = log.value.decode(errors="replace").strip().splitlines()[-5:]
        raise BpfError(error.errno, f"{error.strerror}; verifier: {' | '.join(text)}") from None


def create_tunnel_map() -> int:
    attr = bytearray(64)
    struct.pack_into(
        "<IIIII", attr, 0, BPF_MAP_TYPE_HASH, 4, VALUE_SIZE, MAP_MAX_ENTRIES, BPF_F_NO_PREALLOC
    )
    attr[28 : 28 + 16] = b"vxtap_tunnels".ljust(16, b"\0")
    return bpf(Cmd.MAP_CREATE, attr)


def _elem_attr(fd: int, key: ctypes.Array[ctypes.c_char], value: int, flags: int = 0) -> bytearray:
    attr = bytearray(32)
    struct.pack_into("<IIQQQ", attr, 0, fd, 0, _addr(key), value, flags)
    return attr


def map_update(fd: int, key: int, value: bytes) -> None:
    k = ctypes.create_string_buffer(struct.pack("<I", key), 4)
    v = ctypes.create_string_buffer(value, len(value))
    bpf(Cmd.MAP_UPDATE_ELEM, _elem_attr(fd, k, _addr(v)))


def map_delete(fd: int, key: int) -> None:
    k = ctypes.create_string_buffer(struct.pack("<I", key), 4)
    try:
        bpf(Cmd.MAP_DELETE_ELEM, _elem_attr(fd, k, 0))
    except BpfError as error:
        if error.errno != errno.ENOENT:
            raise


def map_items(fd: int) -> Iterator[tuple[int, bytes]]:
    """Every (key, value) of a u32-keyed map."""
    key = ctypes.create_string_buffer(4)
    next_key = ctypes.create_string_buffer(4)
    value = ctypes.create_string_buffer(VALUE_SIZE)
    first = True
    while True:
        attr = _elem_attr(fd, key, _addr(next_key))
        if first:
            struct.pack_into("<Q", attr, 8, 0)  # NULL key: start at the first
            first = False
        try:
            bpf(Cmd.MAP_GET_NEXT_KEY, attr)
        except BpfError as error:
            if error.errno == errno.ENOENT:
                return
            raise
        ctypes.memmove(key, next_key, 4)
        try:
            bpf(Cmd.MAP_LOOKUP_ELEM, _elem_attr(fd, key, _addr(value)))
        except BpfError as error:
            if error.errno == errno.ENOENT:
                continue  # deleted meanwhile
            raise
        yield struct.unpack("<I", key.raw)[0], value.raw


def prog_fd_by_id(prog_id: int) -> int:
    attr = bytearray(16)
    struct.pack_into("<I", attr, 0, prog_id)
    return bpf(Cmd.PROG_GET_FD_BY_ID, attr)


def map_fd_by_id(map_id: int) -> int:
    attr = bytearray(16)
    struct.pack_into("<I", attr, 0, map_id)
    return bpf(Cmd.MAP_GET_FD_BY_ID, attr)


def prog_map_ids(prog_fd: int) -> list[int]:
    """The ids of the maps a loaded program uses (from bpf_prog_info)."""
    ids = (ctypes.c_uint32 * 8)()
    info = ctypes.create_string_buffer(256)
    struct.pack_into("<IQ", info, 52, len(ids), ctypes.addressof(ids))
    attr = bytearray(16)
    struct.pack_into("<IIQ", attr, 0, prog_fd, len(info), _addr(info))
    bpf(Cmd.OBJ_GET_INFO_BY_FD, attr)
    (count,) = struct.unpack_from("<I", info, 52)
    return [int(ids[i]) for i in range(min(count, len(ids)))]


def tunnel_value(
    *, vni: int, remote: str, local: str | None, snaplen: int, ifindex: int, ttl: int = 64
) -> bytes:
    """The map value for one (session, source): struct bpf_tunnel_key + ours.

    IPv4 addresses go in host byte order (the helper converts), IPv6 as network bytes.
    """
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
