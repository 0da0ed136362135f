"""The mirror program's own time per packet, against a baseline checkout, interleaved.

BPF_PROG_TEST_RUN runs the loaded program on a frame in the kernel and reports the time
the run took. Each call runs it once (`repeat` 1) on a fresh skb, so every run pays the
whole per-copy path the way a mirrored packet does: map lookup, flow hash, the cut, and
then either the tunnel key and redirect (the VXLAN device's path) or the encapsulation
in the program and `bpf_redirect_neigh` (the default). What happens after the program
returns (the redirect itself, the device or neighbour output) is not in the figure.
No devices, no namespaces; the machine's load disturbs it far less than a throughput run.

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
TC_ACT_REDIRECT = 7


def load_module(src: Path, name: str) -> ModuleType:
    """The bpf module of a checkout: `vxtap/dataplane/bpf.py`, or the package's two parts."""
    single = src / "vxtap/dataplane/bpf.py"
    paths = [single] if single.exists() else [src / "vxtap/dataplane/bpf/asm.py"]
    if not single.exists():
        paths.append(src / "vxtap/dataplane/bpf/syscall.py")
    merged = ModuleType(name)
    for index, path in enumerate(paths):
        spec = importlib.util.spec_from_file_location(f"{name}_{index}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        merged.__dict__.update({k: v for k, v in vars(module).items() if not k.startswith("__")})
    return merged


def loaded_program(bpf: ModuleType, in_program: bool) -> int:
    """The mirror program with one tunnel under key 0 (test runs carry mark 0)."""
    tunnels = bpf.create_tunnel_map()
    ports = (32768, 60999) if in_program else None
    value = bpf.tunnel_value(
        vni=1, remote="10.0.0.2", local="10.0.0.1", snaplen=96, ifindex=1, ports=ports
    )
    bpf.map_update(tunnels, 0, value)
    code = bpf.mirror_program(tunnels, bpf.create_scratch_map())
    fd: int = bpf.load_program(code, "vxtap_bench")
    return fd


def test_run(bpf: ModuleType, prog_fd: int, frame: bytes) -> tuple[int, int]:
    """(return value, ns) of one run on a fresh skb holding `frame`."""
    data = ctypes.create_string_buffer(frame, len(frame))
    out = ctypes.create_string_buffer(len(frame) + 256)
    attr = bytearray(80)
    struct.pack_into(
        "<IIIIQQII", attr, 0, prog_fd, 0, len(frame), len(out),
        ctypes.addressof(data), ctypes.addressof(out), 1, 0,
    )  # fmt: skip
    bpf.bpf(BPF_PROG_TEST_RUN, attr)
    return struct.unpack_from("<I", attr, 4)[0], struct.unpack_from("<I", attr, 36)[0]


def ip_frame(version: int, transport: bytes, protocol: int) -> bytes:
    if version == 4:
        ip = struct.pack(
            "!BBHHHBBH4s4s", 0x45, 0, 20 + len(transport), 1, 0x4000, 64, protocol, 0,
            bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]),
        )  # fmt: skip
        return bytes(range(1, 13)) + b"\x08\x00" + ip + transport
    ip = struct.pack(
        "!IHBB16s16s", 0x60012345, len(transport), protocol, 64,
        bytes(15) + b"\1", bytes(15) + b"\2",
    )  # fmt: skip
    return bytes(range(1, 13)) + b"\x86\xdd" + ip + transport


def tcp_frame(version: int, payload: int) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", 1234, 80, 1, 0, 0x50, 0x18, 512, 0, 0) + bytes(payload)
    return ip_frame(version, tcp, 6)


def udp_frame(version: int, payload: int) -> bytes:
    return ip_frame(version, struct.pack("!HHHH", 1234, 5201, 8 + payload, 0) + bytes(payload), 17)


def trimmed_mean(values: list[int]) -> float:
    """The mean of the middle 80 %: the kernel's clock is coarse (tens of ns) for one run,
    and an interrupt now and then makes a run far longer."""
    ordered = sorted(values)
    cut = len(ordered) // 10
    return statistics.fmean(ordered[cut : len(ordered) - cut])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline-src", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--runs", type=int, default=3000, help="runs per round and program")
    args = parser.parse_args()
    here = Path(__file__).resolve().parent.parent / "src"
    versions = {
        "baseline": load_module(args.baseline_src, "bpf_baseline"),
        "this": load_module(here, "bpf_this"),
    }
    paths = {"program": True, "device": False}
    programs = {
        (name, path): (bpf, loaded_program(bpf, in_program))
        for name, bpf in versions.items()
        for path, in_program in paths.items()
    }
    frames = {
        "IPv4 TCP 1514 B": tcp_frame(4, 1460),
        "IPv6 TCP 1514 B": tcp_frame(6, 1440),
        "IPv4 UDP 64 B payload": udp_frame(4, 64),
        "IPv4 TCP 66 B (no cut)": tcp_frame(4, 0),
    }
    times: dict[tuple[str, str, str], list[float]] = {}
    for round_ in range(args.rounds):
        order = list(versions) if round_ % 2 else list(reversed(versions))
        for frame_name, frame in frames.items():
            for path in paths:
                for name in order:
                    bpf, fd = programs[(name, path)]
                    runs = []
                    for _ in range(args.runs):
                        result, ns = test_run(bpf, fd, frame)
                        assert result == TC_ACT_REDIRECT, result  # the whole path ran
                        runs.append(ns)
                    times.setdefault((frame_name, path, name), []).append(trimmed_mean(runs))
    print("ns per run: median over rounds of each round's mean (middle 80 % of its runs)")
    for frame_name in frames:
        for path in paths:
            base = statistics.median(times[(frame_name, path, "baseline")])
            this = statistics.median(times[(frame_name, path, "this")])
            print(
                f"{frame_name:24} {path:8} baseline {base:6.0f} ns  this {this:6.0f} ns"
                f"  ratio {this / base:.2f}"
            )


if __name__ == "__main__":
    main()
