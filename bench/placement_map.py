"""A placement table in the kernel: write time, and one swap (a design check).

Collector groups are not wired into the kernel yet (docs/dataplane.md, "Flow
placement"). This checks the layout proposed for it, on this kernel, with a 26-
instruction lookup program run by BPF_PROG_TEST_RUN:

* an outer BPF_MAP_TYPE_ARRAY_OF_MAPS (one entry per group) holding an inner
  BPF_MAP_TYPE_ARRAY of 8,193 x 8 bytes: the 65,537 one-byte member indexes, 8 per
  element (an array element takes 8 bytes whatever its value size);
* the program computes slot = hash % 65537 (BPF_MOD), looks up element slot >> 3
  and loads byte slot & 7; the verifier accepts it;
* the agent fills a new inner map and swaps it in with one update of the outer entry.

It measures filling the inner map one element per bpf(2) call against one
BPF_MAP_UPDATE_BATCH call (Linux 5.6+), interleaved, and checks that the program's
answer equals `placement()` for 2,000 hashes before and after a swap.

Run as root:
  PYTHONPATH=src .venv/bin/python bench/placement_map.py
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import struct
import time
from enum import IntEnum
from typing import cast

from vxtap.dataplane.bpf import asm, syscall
from vxtap.dataplane.bpf.asm import Helper, Op, Reg
from vxtap.dataplane.placement import TABLE_SLOTS, PlacementTable, build_table, placement

BPF_MAP_TYPE_ARRAY = 2
BPF_MAP_TYPE_ARRAY_OF_MAPS = 12
ALU32_MOD_K = 0x94  # BPF_ALU | BPF_MOD | BPF_K
ELEMENTS = (TABLE_SLOTS + 7) // 8
NO_TABLE = 255


class MoreCommands(IntEnum):
    """bpf(2) commands vxtap.dataplane.bpf.syscall does not have (yet)."""

    PROG_TEST_RUN = 10
    MAP_UPDATE_BATCH = 26


def create_map(map_type: int, value_size: int, entries: int, inner_fd: int = 0) -> int:
    attr = bytearray(72)
    struct.pack_into("<IIIIII", attr, 0, map_type, 4, value_size, entries, 0, inner_fd)
    return syscall.bpf(syscall.Cmd.MAP_CREATE, attr)


def update(fd: int, key: int, value: bytes) -> None:
    k = ctypes.create_string_buffer(struct.pack("<I", key), 4)
    v = ctypes.create_string_buffer(value, len(value))
    attr = bytearray(32)
    struct.pack_into("<IIQQQ", attr, 0, fd, 0, ctypes.addressof(k), ctypes.addressof(v), 0)
    syscall.bpf(syscall.Cmd.MAP_UPDATE_ELEM, attr)


def packed(table: PlacementTable) -> bytes:
    return table.slots + bytes(8 * ELEMENTS - len(table.slots))


def fill_per_element(fd: int, table: PlacementTable) -> None:
    values = packed(table)
    for index in range(ELEMENTS):
        update(fd, index, values[8 * index : 8 * index + 8])


def fill_batch(fd: int, table: PlacementTable) -> None:
    keys = ctypes.create_string_buffer(struct.pack(f"<{ELEMENTS}I", *range(ELEMENTS)))
    values = ctypes.create_string_buffer(packed(table))
    attr = bytearray(56)
    struct.pack_into(
        "<QQQQIIQQ", attr, 0, 0, 0, ctypes.addressof(keys), ctypes.addressof(values),
        ELEMENTS, fd, 0, 0,
    )  # fmt: skip
    syscall.bpf(cast(syscall.Cmd, MoreCommands.MAP_UPDATE_BATCH), attr)
    assert struct.unpack_from("<I", attr, 32)[0] == ELEMENTS


def lookup_program(outer_fd: int) -> bytes:
    """r0 = the member index for hash = skb->mark (NO_TABLE without a table)."""
    a = asm.Assembler()
    r0, r1, r2, r6, r7, r8, fp = Reg.R0, Reg.R1, Reg.R2, Reg.R6, Reg.R7, Reg.R8, Reg.FP
    a.movx(r6, r1)
    a.mov(r2, 0)  # the group's entry in the outer map
    a.store32(fp, -4, r2)
    a.load_map_fd(r1, outer_fd)
    a.movx(r2, fp)
    a.emit(Op.ADD_K, r2, imm=-4)
    a.call(Helper.MAP_LOOKUP_ELEM)
    a.jump(Op.JEQ_K, r0, 0, "none")
    a.movx(r7, r0)  # the inner map
    a.load32(r8, r6, asm.SkbField.MARK)
    a.emit(cast(Op, ALU32_MOD_K), r8, imm=TABLE_SLOTS)  # the slot
    a.movx(r2, r8)
    a.emit(Op.RSH_K, r2, imm=3)
    a.store32(fp, -8, r2)
    a.movx(r1, r7)
    a.movx(r2, fp)
    a.emit(Op.ADD_K, r2, imm=-8)
    a.call(Helper.MAP_LOOKUP_ELEM)
    a.jump(Op.JEQ_K, r0, 0, "none")
    a.emit(Op.AND_K, r8, imm=7)
    a.emit(Op.ADD_X, r0, r8)
    a.load8(r0, r0, 0)
    a.emit(Op.EXIT)
    a.label("none")
    a.mov(r0, NO_TABLE)
    a.emit(Op.EXIT)
    return a.assemble()


def run(program: int, flow_hash: int) -> int:
    frame = bytes(12) + b"\x08\x00\x45" + bytes(59)
    data = ctypes.create_string_buffer(frame, len(frame))
    context = ctypes.create_string_buffer(struct.pack("<III", 0, 0, flow_hash), 192)
    attr = bytearray(80)
    struct.pack_into(
        "<IIIIQQIIIIQQ", attr, 0, program, 0, len(frame), 0, ctypes.addressof(data), 0,
        1, 0, len(context), 0, ctypes.addressof(context), 0,
    )  # fmt: skip
    syscall.bpf(cast(syscall.Cmd, MoreCommands.PROG_TEST_RUN), attr)
    return int(struct.unpack_from("<I", attr, 4)[0])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    members = [f"collector-{n}" for n in range(16)]
    tables = build_table(members), build_table(members[1:])
    inners = [create_map(BPF_MAP_TYPE_ARRAY, 8, ELEMENTS) for _ in tables]
    outer = create_map(BPF_MAP_TYPE_ARRAY_OF_MAPS, 4, 16, inners[0])
    program = syscall.load_program(lookup_program(outer), "vxtap_place")
    try:
        times: dict[str, list[float]] = {"per element": [], "batch": []}
        for round_ in range(args.rounds):
            order = list(times) if round_ % 2 else list(reversed(times))
            for name in order:
                fill = fill_batch if name == "batch" else fill_per_element
                start = time.perf_counter()
                fill(inners[0], tables[round_ % 2])
                times[name].append(time.perf_counter() - start)
        for name, values in times.items():
            median_ms = 1000 * statistics.median(values)
            print(f"fill {ELEMENTS} elements, {name}: median {median_ms:.1f} ms")
        hashes = [(0x9E3779B1 * n) & 0xFFFFFFFF | 1 for n in range(1, 2001)]
        assert run(program, hashes[0]) == NO_TABLE  # the outer entry is still empty
        for inner, table in zip(inners, tables, strict=True):
            fill_batch(inner, table)
            update(outer, 0, struct.pack("<I", inner))  # the swap: one write
            agree = all(table.members[run(program, h)] == placement(table, h) for h in hashes)
            print(f"after swapping in the {len(table.members)}-member table: agrees {agree}")
            assert agree
    finally:
        for fd in (program, outer, *inners):
            os.close(fd)


if __name__ == "__main__":
    main()
