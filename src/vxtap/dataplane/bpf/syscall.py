"""The few bpf(2) calls the data plane needs: load a program, make and read the maps,
find programs and maps again by id, run a program once (BPF_PROG_TEST_RUN).

The programs and map values themselves are built by `vxtap.dataplane.bpf.asm`."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import platform
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from vxtap.dataplane.bpf.asm import MAP_MAX_ENTRIES, SCRATCH_SIZE, VALUE_SIZE

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
    PROG_TEST_RUN = 10
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


BPF_PROG_TYPE_SCHED_CLS: Final = 3
BPF_MAP_TYPE_HASH: Final = 1
BPF_MAP_TYPE_PERCPU_ARRAY: Final = 6
BPF_F_NO_PREALLOC: Final = 1


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


@dataclass(frozen=True)
class ProgramRun:
    """What BPF_PROG_TEST_RUN gives back for one run of a program on one frame."""

    result: int  # the program's return value (TC_ACT_*)
    frame: bytes  # the packet as the program left it
    ns: int  # the run's duration (the kernel's clock is coarse for one run)


def prog_test_run(prog_fd: int, frame: bytes) -> ProgramRun:
    """Run a loaded tc program once on a fresh skb holding `frame` (no device involved:
    a redirect is only requested, never done)."""
    data = ctypes.create_string_buffer(frame, len(frame))
    out = ctypes.create_string_buffer(len(frame) + 256)
    attr = bytearray(80)
    struct.pack_into(
        "<IIIIQQII", attr, 0, prog_fd, 0, len(frame), len(out), _addr(data), _addr(out), 1, 0
    )
    bpf(Cmd.PROG_TEST_RUN, attr)
    (result,), (size_out,) = struct.unpack_from("<I", attr, 4), struct.unpack_from("<I", attr, 12)
    return ProgramRun(result, out.raw[:size_out], struct.unpack_from("<I", attr, 36)[0])


def create_tunnel_map() -> int:
    attr = bytearray(64)
    struct.pack_into(
        "<IIIII", attr, 0, BPF_MAP_TYPE_HASH, 4, VALUE_SIZE, MAP_MAX_ENTRIES, BPF_F_NO_PREALLOC
    )
    attr[28 : 28 + 16] = b"vxtap_tunnels".ljust(16, b"\0")
    return bpf(Cmd.MAP_CREATE, attr)


def create_scratch_map() -> int:
    """The mirror program's per-CPU buffer (one entry of SCRATCH_SIZE bytes)."""
    attr = bytearray(64)
    struct.pack_into("<IIIII", attr, 0, BPF_MAP_TYPE_PERCPU_ARRAY, 4, SCRATCH_SIZE, 1, 0)
    attr[28 : 28 + 16] = b"vxtap_scratch".ljust(16, b"\0")
    return bpf(Cmd.MAP_CREATE, attr)


def map_value_size(map_fd: int) -> int:
    """struct bpf_map_info's value_size (a map made by an older agent may differ)."""
    info = ctypes.create_string_buffer(80)
    attr = bytearray(16)
    struct.pack_into("<IIQ", attr, 0, map_fd, len(info), _addr(info))
    bpf(Cmd.OBJ_GET_INFO_BY_FD, attr)
    return int(struct.unpack_from("<I", info, 12)[0])


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
