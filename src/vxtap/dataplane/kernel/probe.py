"""Which kernel features and tools vxtap needs that this host lacks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

from vxtap.dataplane.bpf import asm, syscall
from vxtap.dataplane.capabilities import own_missing_capabilities
from vxtap.dataplane.kernel.shell import Run
from vxtap.dataplane.plan import FAMILY

# An nft batch with what vxtap's rules use: a netdev egress base chain, a priority
# mangle and a `dup`. `nft --check` has the kernel validate it, then aborts it.
PROBE_TABLE = "vxtap_probe"
NFT_PROBE = {
    "nftables": [
        {"add": {"table": {"family": FAMILY, "name": PROBE_TABLE}}},
        {
            "add": {
                "chain": {
                    "family": FAMILY,
                    "table": PROBE_TABLE,
                    "name": "e",
                    "type": "filter",
                    "hook": "egress",
                    "dev": "lo",
                    "prio": 0,
                    "policy": "accept",
                }
            }
        },
        {
            "add": {
                "rule": {
                    "family": FAMILY,
                    "table": PROBE_TABLE,
                    "chain": "e",
                    "expr": [
                        {"mangle": {"key": {"meta": {"key": "priority"}}, "value": 1}},
                        {"dup": {"addr": "lo"}},
                    ],
                }
            }
        },
    ]
}


def missing_prerequisites(run: Run) -> list[str]:
    """Each kernel feature or tool vxtap needs that this host lacks, by name."""
    missing = own_missing_capabilities(os.geteuid())
    try:
        syscall.bpf_syscall_number(syscall.MACHINE)
    except ValueError as error:
        missing.append(str(error))
    for tool, package in (("nft", "nftables"), ("ethtool", "ethtool"), ("ip", "iproute2")):
        if shutil.which(tool) is None:
            missing.append(f"the {tool} command (package {package})")
    if missing:
        return missing
    # Built in or loaded: in /sys/module; a module `ip link add` would load: modprobe -n.
    if not os.path.exists("/sys/module/vxlan") and (
        shutil.which("modprobe") is None
        or subprocess.run(["modprobe", "-n", "vxlan"], capture_output=True).returncode != 0
    ):
        missing.append("kernel VXLAN support (CONFIG_VXLAN)")
    out = run(["nft", "--check", "-j", "-f", "-"], json.dumps(NFT_PROBE, separators=(",", ":")))
    if out.returncode != 0:
        missing.append(
            "nftables netdev egress hooks with dup (CONFIG_NETFILTER_EGRESS, "
            f"CONFIG_NFT_DUP_NETDEV, nftables >= 1.0.1): {out.stderr.strip()[:300]}"
        )
    fds: list[int] = []
    try:
        fds += [syscall.create_tunnel_map()]
        fds += [syscall.create_scratch_map()]
    except OSError as error:
        missing.append(f"eBPF maps (bpf(2) BPF_MAP_CREATE: {error.strerror})")
    else:
        try:
            for kind in asm.ProgramKind:
                os.close(syscall.load_program(asm.program(kind, *fds), "vxtap_probe"))
        except OSError as error:
            missing.append(
                "eBPF tc programs with skb_change_tail/skb_adjust_room/skb_set_tunnel_key "
                f"(CONFIG_NET_CLS_BPF, CONFIG_BPF_SYSCALL): {error.strerror}"
            )
    finally:
        for fd in fds:
            os.close(fd)
    return missing
