"""The mirror program's own time per packet, against a baseline checkout, interleaved.

BPF_PROG_TEST_RUN runs the loaded program on a frame in the kernel `--repeat` times
and reports the mean time per run. Test runs reuse one skb, so only the first run cuts
it: this measures the per-packet work every copy pays (map lookup, flow hash, tunnel
key, redirect), not the cut. No devices, no namespaces.

Run as root:
  .venv/bin/python bench/mirror_program.py --baseline-src /path/to/other/checkout/src
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.util
import statistics
import struct
import sys
from pathlib import Path
from types import ModuleType

BPF_PROG_TEST_RUN = 10


def load_module(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def loaded_program(bpf: ModuleType) -> int:
    """The mirror program with one tunnel under key 0 (test runs carry mark 0)."""
    tunnels = bpf.create_tunnel_map()
    value = bpf.tunnel_value(vni=1, remote="10.0.0.2", local="10.0.0.1", snaplen=96, ifindex=1)
    bpf.map_update(tunnels, 0, value)
    if hasattr(bpf, "create_scratch_map"):
        code = bpf.mirror_program(tunnels, bpf.create_scratch_map())
    else:
        code = bpf.mirror_program(tunnels)
    fd: int = bpf.load_program(code, "vxtap_bench")
    return fd


def test_run(bpf: ModuleType, prog_fd: int, frame: bytes, repeat: int) -> tuple[int, int]:
    """(return value, mean ns per run)."""
    data = ctypes.create_string_buffer(frame, len(frame))
    out = ctypes.create_string_buffer(len(frame) + 256)
    attr = bytearray(80)
    struct.pack_into(
        "<IIIIQQII", attr, 0, prog_fd, 0, len(frame), len(out),
        ctypes.addressof(data), ctypes.addressof(out), repeat, 0,
    )  # fmt: skip
    bpf.bpf(BPF_PROG_TEST_RUN, attr)
    return struct.unpack_from("<I", attr, 4)[0], struct.unpack_from("<I", attr, 36)[0]


def tcp_frame(version: int, payload: int) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", 1234, 80, 1, 0, 0x50, 0x18, 512, 0, 0) + bytes(payload)
    if version == 4:
        ip = struct.pack(
            "!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0x4000, 64, 6, 0,
            bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]),
        )  # fmt: skip
        return bytes(12) + b"\x08\x00" + ip + tcp
    ip = struct.pack(
        "!IHBB16s16s", 0x60012345, len(tcp), 6, 64, bytes(15) + b"\1", bytes(15) + b"\2"
    )
    return bytes(12) + b"\x86\xdd" + ip + tcp


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline-src", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--repeat", type=int, default=20000)
    args = parser.parse_args()
    here = Path(__file__).resolve().parent.parent / "src/vxtap/dataplane/bpf.py"
    versions = {
        "baseline": load_module(args.baseline_src / "vxtap/dataplane/bpf.py", "bpf_baseline"),
        "this": load_module(here, "bpf_this"),
    }
    programs = {name: (bpf, loaded_program(bpf)) for name, bpf in versions.items()}
    frames = {"IPv4 TCP 1514 B": tcp_frame(4, 1460), "IPv6 TCP 1514 B": tcp_frame(6, 1440)}
    times: dict[tuple[str, str], list[int]] = {}
    for round_ in range(args.rounds):
        order = list(programs) if round_ % 2 else list(reversed(programs))
        for frame_name, frame in frames.items():
            for name in order:
                bpf, fd = programs[name]
                result, ns = test_run(bpf, fd, frame, args.repeat)
                assert result == 7, result  # TC_ACT_REDIRECT: the whole path ran
                times.setdefault((frame_name, name), []).append(ns)
    for frame_name in frames:
        base = statistics.median(times[(frame_name, "baseline")])
        this = statistics.median(times[(frame_name, "this")])
        print(f"{frame_name}: baseline {base} ns, this {this} ns, ratio {this / base:.2f}")


if __name__ == "__main__":
    main()
