"""bpf(2): the kernel verifier's verdict on both programs, and the tunnel map."""

from __future__ import annotations

import os

import pytest

from vxtap.dataplane.bpf import asm, syscall


@pytest.mark.skipif(os.geteuid() != 0, reason="loading eBPF needs root")
def test_the_verifier_accepts_both_programs_and_the_map_round_trips() -> None:
    map_fd, scratch_fd = syscall.create_tunnel_map(), syscall.create_scratch_map()
    try:
        assert syscall.map_value_size(map_fd) == asm.VALUE_SIZE
        for kind in asm.ProgramKind:
            os.close(syscall.load_program(asm.program(kind, map_fd, scratch_fd), "vxtap_test"))
        value = asm.tunnel_value(vni=9, remote="10.0.0.2", local=None, snaplen=96, ifindex=1)
        syscall.map_update(map_fd, 5, value)
        syscall.map_update(map_fd, 6, value)
        assert dict(syscall.map_items(map_fd)) == {5: value, 6: value}
        syscall.map_delete(map_fd, 5)
        syscall.map_delete(map_fd, 5)  # already gone: fine
        assert dict(syscall.map_items(map_fd)) == {6: value}
    finally:
        os.close(map_fd)
        os.close(scratch_fd)
    with pytest.raises(syscall.BpfError, match="verifier"):
        syscall.load_program(bytes(8), "vxtap_bad")  # r0 = ? ; no exit
