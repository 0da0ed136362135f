"""The hand-assembled programs: encoding, map values, and the kernel verifier's verdict."""

from __future__ import annotations

import os
import struct

import pytest

from vxtap.dataplane import bpf


def test_assembler_resolves_labels_and_encodes_registers() -> None:
    a = bpf.Assembler()
    a.jump(bpf.Op.JEQ_K, bpf.Reg.R0, 0, "out")
    a.movx(bpf.Reg.R6, bpf.Reg.R1)
    a.label("out")
    a.emit(bpf.Op.EXIT)
    code = a.assemble()
    assert struct.unpack("<BBhi", code[0:8]) == (0x15, 0x00, 1, 0)  # skip one instruction
    assert struct.unpack("<BBhi", code[8:16]) == (0xBF, 0x16, 0, 0)  # src r1, dst r6
    assert code[16] == 0x95


def test_map_value_layout_is_struct_bpf_tunnel_key() -> None:
    v4 = bpf.tunnel_value(vni=7, remote="10.0.0.2", local="10.0.0.1", snaplen=96, ifindex=3)
    assert len(v4) == bpf.VALUE_SIZE
    assert struct.unpack_from("<II", v4, 0) == (7, 0x0A000002)  # host order: the helper swaps
    assert v4[21] == 64 and struct.unpack_from("<I", v4, 28)[0] == 0x0A000001
    assert struct.unpack_from("<III", v4, 44) == (96, 0, 3)
    v6 = bpf.tunnel_value(vni=1, remote="fd00::2", local="fd00::1", snaplen=60, ifindex=4)
    assert v6[4:20] == bytes.fromhex("fd000000000000000000000000000002")
    assert v6[28:44] == bytes.fromhex("fd000000000000000000000000000001")
    assert struct.unpack_from("<I", v6, 48)[0] == bpf.BPF_F_TUNINFO_IPV6


def test_program_versions_identify_the_code() -> None:
    versions = {bpf.program_version(kind) for kind in bpf.ProgramKind}
    assert len(versions) == 2
    assert bpf.mirror_program(3, 5) != bpf.mirror_program(4, 5)  # the map fds are in the code
    assert bpf.program_version(bpf.ProgramKind.MIRROR) == bpf.program_version(
        bpf.ProgramKind.MIRROR
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="loading eBPF needs root")
def test_the_verifier_accepts_both_programs_and_the_map_round_trips() -> None:
    map_fd, scratch_fd = bpf.create_tunnel_map(), bpf.create_scratch_map()
    try:
        assert bpf.map_value_size(map_fd) == bpf.VALUE_SIZE
        for kind in bpf.ProgramKind:
            os.close(bpf.load_program(bpf.program(kind, map_fd, scratch_fd), "vxtap_test"))
        value = bpf.tunnel_value(vni=9, remote="10.0.0.2", local=None, snaplen=96, ifindex=1)
        bpf.map_update(map_fd, 5, value)
        bpf.map_update(map_fd, 6, value)
        assert dict(bpf.map_items(map_fd)) == {5: value, 6: value}
        bpf.map_delete(map_fd, 5)
        bpf.map_delete(map_fd, 5)  # already gone: fine
        assert dict(bpf.map_items(map_fd)) == {6: value}
    finally:
        os.close(map_fd)
        os.close(scratch_fd)
    with pytest.raises(bpf.BpfError, match="verifier"):
        bpf.load_program(bytes(8), "vxtap_bad")  # r0 = ? ; no exit


def test_encapsulation_in_the_program_is_chosen_from_5_13_on() -> None:
    from vxtap.dataplane.kernel import ENCAP_IN_PROGRAM_SINCE, kernel_release_at_least

    assert not kernel_release_at_least("5.12.19-generic", ENCAP_IN_PROGRAM_SINCE)
    assert not kernel_release_at_least("4.19.0", ENCAP_IN_PROGRAM_SINCE)
    assert kernel_release_at_least("5.13.0-1", ENCAP_IN_PROGRAM_SINCE)
    assert kernel_release_at_least("6.18.44", ENCAP_IN_PROGRAM_SINCE)
    assert not kernel_release_at_least("unknown", ENCAP_IN_PROGRAM_SINCE)


def test_an_in_program_entry_takes_ipv4_only_and_carries_its_port_range() -> None:
    value = bpf.tunnel_value(
        vni=7, remote="10.0.0.2", local="10.0.0.1", snaplen=96, ifindex=3, ports=(32768, 60999)
    )
    assert struct.unpack_from("<II", value, 0) == (7, 0x0A000002)
    assert value[21] == 64
    assert struct.unpack_from("<III", value, 28) == (0x0A000001, 32768, 60999 - 32768 + 1)
    flags = struct.unpack_from("<I", value, bpf.VALUE_FLAGS)[0]
    assert flags == bpf.FLAG_ENCAP_IN_PROGRAM
    for remote, local in (("fd00::2", "fd00::1"), ("10.0.0.2", None), ("10.0.0.2", "fd00::1")):
        with pytest.raises(ValueError):
            bpf.tunnel_value(vni=7, remote=remote, local=local, snaplen=96, ifindex=3, ports=(1, 2))
