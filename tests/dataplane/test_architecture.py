"""bpf(2)'s syscall number by architecture, and a clear refusal of the others."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from vxtap.dataplane.bpf import syscall
from vxtap.dataplane.kernel import Dataplane

# The kernel's own tables (package linux-libc-dev): aarch64 uses the generic one.
HEADERS = {
    "x86_64": Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h"),
    "aarch64": Path("/usr/include/asm-generic/unistd.h"),
}


def test_both_architectures_have_their_numbers() -> None:
    assert syscall.bpf_syscall_number("x86_64") == 321
    assert syscall.bpf_syscall_number("aarch64") == 280


@pytest.mark.parametrize("machine", sorted(HEADERS))
def test_the_numbers_are_the_kernel_headers(machine: str) -> None:
    header = HEADERS[machine]
    if not header.exists():
        pytest.skip(f"{header} is not installed (package linux-libc-dev)")
    number = re.search(r"#define __NR_bpf (\d+)", header.read_text())
    assert number is not None
    assert syscall.bpf_syscall_number(machine) == int(number.group(1))


@pytest.mark.parametrize("machine", ["riscv64", "armv7l", "i686", ""])
def test_other_architectures_are_refused_by_name(machine: str) -> None:
    with pytest.raises(ValueError) as refused:
        syscall.bpf_syscall_number(machine)
    assert str(refused.value) == (
        f"unsupported CPU architecture {machine!r}: vxtap supports x86_64 and aarch64"
    )


def test_a_bpf_call_on_another_architecture_fails_cleanly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(syscall, "MACHINE", "riscv64")
    with pytest.raises(syscall.BpfError, match="unsupported CPU architecture 'riscv64'"):
        syscall.create_tunnel_map()


def test_the_prerequisites_check_names_the_architecture(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(syscall, "MACHINE", "riscv64")
    missing = Dataplane().missing_prerequisites()  # returns before touching the kernel
    assert "unsupported CPU architecture 'riscv64': vxtap supports x86_64 and aarch64" in missing


@pytest.mark.skipif(os.geteuid() != 0, reason="bpf(2) needs privileges")
def test_this_machine_calls_bpf_with_its_own_number() -> None:
    os.close(syscall.create_tunnel_map())
