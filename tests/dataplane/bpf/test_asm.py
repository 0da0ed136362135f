"""The hand-assembled programs: encoding, map values, and what the mirror program does
to single frames (run by the kernel with BPF_PROG_TEST_RUN)."""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator

import pytest

from vxtap.dataplane.bpf import asm, syscall


def test_assembler_resolves_labels_and_encodes_registers() -> None:
    a = asm.Assembler()
    a.jump(asm.Op.JEQ_K, asm.Reg.R0, 0, "out")
    a.movx(asm.Reg.R6, asm.Reg.R1)
    a.label("out")
    a.emit(asm.Op.EXIT)
    code = a.assemble()
    assert struct.unpack("<BBhi", code[0:8]) == (0x15, 0x00, 1, 0)  # skip one instruction
    assert struct.unpack("<BBhi", code[8:16]) == (0xBF, 0x16, 0, 0)  # src r1, dst r6
    assert code[16] == 0x95


def test_map_value_layout_is_struct_bpf_tunnel_key() -> None:
    v4 = asm.tunnel_value(vni=7, remote="10.0.0.2", local="10.0.0.1", snaplen=96, ifindex=3)
    assert len(v4) == asm.VALUE_SIZE
    assert struct.unpack_from("<II", v4, 0) == (7, 0x0A000002)  # host order: the helper swaps
    assert v4[21] == 64 and struct.unpack_from("<I", v4, 28)[0] == 0x0A000001
    assert struct.unpack_from("<III", v4, 44) == (96, 0, 3)
    v6 = asm.tunnel_value(vni=1, remote="fd00::2", local="fd00::1", snaplen=60, ifindex=4)
    assert v6[4:20] == bytes.fromhex("fd000000000000000000000000000002")
    assert v6[28:44] == bytes.fromhex("fd000000000000000000000000000001")
    assert struct.unpack_from("<I", v6, 48)[0] == asm.BPF_F_TUNINFO_IPV6


def test_program_versions_identify_the_code() -> None:
    versions = {asm.program_version(kind) for kind in asm.ProgramKind}
    assert len(versions) == 2
    assert asm.mirror_program(3, 5) != asm.mirror_program(4, 5)  # the map fds are in the code
    assert asm.program_version(asm.ProgramKind.MIRROR) == asm.program_version(
        asm.ProgramKind.MIRROR
    )


def test_encapsulation_in_the_program_is_chosen_from_5_13_on() -> None:
    from vxtap.dataplane.kernel import ENCAP_IN_PROGRAM_SINCE, kernel_release_at_least

    assert not kernel_release_at_least("5.12.19-generic", ENCAP_IN_PROGRAM_SINCE)
    assert not kernel_release_at_least("4.19.0", ENCAP_IN_PROGRAM_SINCE)
    assert kernel_release_at_least("5.13.0-1", ENCAP_IN_PROGRAM_SINCE)
    assert kernel_release_at_least("6.18.44", ENCAP_IN_PROGRAM_SINCE)
    assert not kernel_release_at_least("unknown", ENCAP_IN_PROGRAM_SINCE)


def test_an_in_program_entry_takes_ipv4_only_and_carries_its_port_range() -> None:
    value = asm.tunnel_value(
        vni=7, remote="10.0.0.2", local="10.0.0.1", snaplen=96, ifindex=3, ports=(32768, 60999)
    )
    assert struct.unpack_from("<II", value, 0) == (7, 0x0A000002)
    assert value[21] == 64
    assert struct.unpack_from("<III", value, 28) == (0x0A000001, 32768, 60999 - 32768 + 1)
    flags = struct.unpack_from("<I", value, asm.VALUE_FLAGS)[0]
    assert flags == asm.FLAG_ENCAP_IN_PROGRAM
    for remote, local in (("fd00::2", "fd00::1"), ("10.0.0.2", None), ("10.0.0.2", "fd00::1")):
        with pytest.raises(ValueError):
            asm.tunnel_value(vni=7, remote=remote, local=local, snaplen=96, ifindex=3, ports=(1, 2))


# --- the mirror program run by the kernel on single frames (BPF_PROG_TEST_RUN) -----------

A4, B4 = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
A6, B6 = bytes(15) + b"\1", bytes(15) + b"\2"
UNICAST = bytes.fromhex("02ffffffff01")


def _ipv4(src: bytes, dst: bytes, protocol: int, body: bytes, options: bytes = b"") -> bytes:
    ihl = 5 + len(options) // 4
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x40 | ihl, 0, 4 * ihl + len(body), 1, 0, 64, protocol, 0, src, dst
    )
    return UNICAST + bytes(6) + b"\x08\x00" + header + options + body


def _ipv6(src: bytes, dst: bytes, next_header: int, body: bytes, hop_by_hop: bool) -> bytes:
    if hop_by_hop:  # an 8-byte hop-by-hop options header (PadN) in front of the body
        body = struct.pack("!BB", next_header, 0) + b"\x01\x04" + bytes(4) + body
        next_header = 0
    header = struct.pack("!IHBB16s16s", 0x60012345, len(body), next_header, 64, src, dst)
    return UNICAST + bytes(6) + b"\x86\xdd" + header + body


def _tcp(sport: int, dport: int) -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 0x50, 0x18, 512, 0, 0)


@pytest.fixture
def program_path() -> Iterator[int]:
    """The mirror program, loaded, with one entry (key 0: test runs carry mark 0) that
    encapsulates in the program."""
    map_fd, scratch_fd = syscall.create_tunnel_map(), syscall.create_scratch_map()
    value = asm.tunnel_value(
        vni=7, remote="10.0.0.2", local="10.0.0.1", snaplen=96, ifindex=1, ports=(32768, 60999)
    )
    syscall.map_update(map_fd, 0, value)
    prog_fd = syscall.load_program(asm.mirror_program(map_fd, scratch_fd), "vxtap_test")
    try:
        yield prog_fd
    finally:
        for fd in (prog_fd, map_fd, scratch_fd):
            os.close(fd)


def _mirror(prog_fd: int, frame: bytes) -> bytes:
    run = syscall.prog_test_run(prog_fd, frame)
    assert run.result == asm.TC_ACT_REDIRECT
    return run.frame


def _outer_source_port(prog_fd: int, frame: bytes) -> int:
    port: int = struct.unpack_from("!H", _mirror(prog_fd, frame), 14 + 20)[0]
    return port


@pytest.mark.skipif(os.geteuid() != 0, reason="running eBPF needs root")
def test_the_flow_hash_is_the_same_on_the_direct_path_and_the_general_one(
    program_path: int,
) -> None:
    """The common copy is hashed from the linear data, anything else through
    bpf_skb_load_bytes: IPv4 with options and IPv6 with an extension header take the
    general path, and must give their flow the same outer source port, both ways."""
    nop = b"\x01\x01\x01\x00"  # IPv4 options: NOP, NOP, NOP, end
    flows = {
        "tcp4": [
            _ipv4(A4, B4, 6, _tcp(1000, 80)),
            _ipv4(A4, B4, 6, _tcp(1000, 80), options=nop),
            _ipv4(B4, A4, 6, _tcp(80, 1000)),
            _ipv4(B4, A4, 6, _tcp(80, 1000), options=nop),
        ],
        "icmp4": [
            _ipv4(A4, B4, 1, bytes(8)),
            _ipv4(B4, A4, 1, bytes(8), options=nop),
        ],
        "tcp6": [
            _ipv6(A6, B6, 6, _tcp(1000, 80), hop_by_hop=False),
            _ipv6(A6, B6, 6, _tcp(1000, 80), hop_by_hop=True),
            _ipv6(B6, A6, 6, _tcp(80, 1000), hop_by_hop=True),
            _ipv6(B6, A6, 6, _tcp(80, 1000), hop_by_hop=False),
        ],
        "icmp6": [
            _ipv6(A6, B6, 58, bytes(8), hop_by_hop=False),
            _ipv6(B6, A6, 58, bytes(8), hop_by_hop=True),
        ],
    }
    ports = {
        name: {_outer_source_port(program_path, frame) for frame in frames}
        for name, frames in flows.items()
    }
    assert all(len(found) == 1 for found in ports.values()), ports
    assert len({port for found in ports.values() for port in found}) == len(flows)
    other_port = _outer_source_port(program_path, _ipv4(A4, B4, 6, _tcp(1001, 80)))
    assert other_port not in ports["tcp4"]


@pytest.mark.skipif(os.geteuid() != 0, reason="running eBPF needs root")
def test_the_program_writes_the_outer_headers(program_path: int) -> None:
    """Outer Ethernet (zero MACs, never multicast, whatever the copy's destination),
    IPv4 with a right checksum and lengths, UDP to 4789 within the port range, VXLAN
    with the VNI, then the copy itself (its Ethernet header included)."""
    broadcast = b"\xff" * 6 + _ipv6(A6, B6, 6, _tcp(1000, 80), hop_by_hop=False)[6:]
    for inner in (_ipv4(A4, B4, 6, _tcp(1000, 80)), broadcast):
        out = _mirror(program_path, inner)
        assert out[:14] == bytes(12) + b"\x08\x00"
        ip = out[14:34]
        assert ip[0] == 0x45 and ip[8] == 64 and ip[9] == 17
        assert struct.unpack_from("!H", ip, 2)[0] == len(out) - 14 == 20 + 8 + 8 + len(inner)
        assert ip[12:20] == A4 + B4
        words = struct.unpack("!10H", ip)
        total = sum(words)
        assert (total & 0xFFFF) + (total >> 16) == 0xFFFF  # the checksum adds up
        sport, dport, length, checksum = struct.unpack_from("!HHHH", out, 34)
        assert 32768 <= sport <= 60999 and dport == 4789
        assert (length, checksum) == (8 + 8 + len(inner), 0)
        assert out[42:50] == bytes.fromhex("08000000") + (7 << 8).to_bytes(4, "big")
        assert out[50:] == inner
