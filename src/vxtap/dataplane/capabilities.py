"""The Linux capabilities the agent needs, and which of them this process lacks.

The agent does not need to be root: docs/deploy.md ("Capabilities") says how each
was found (the agent run under `setpriv` with one capability dropped at a time).

- CAP_NET_ADMIN: nftables (netlink and the `nft` command), tc filters, the VXLAN
  and copy devices (`ip link`), `ethtool -K`.
- CAP_SYS_ADMIN: bpf(2). CAP_BPF would do for creating the map and loading the
  program, but the agent finds the running program's map again by id (after a
  restart, and when it checks what it wrote), and the kernel allows
  BPF_PROG_GET_FD_BY_ID and BPF_MAP_GET_FD_BY_ID only with CAP_SYS_ADMIN.

The commands the agent runs (nft, ip, ethtool) inherit the capabilities only
when they are ambient, so a non-root agent needs them there too (systemd's
AmbientCapabilities=, `setpriv --ambient-caps`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

# name -> (bit number in linux/capability.h, what the agent uses it for)
AGENT_CAPABILITIES: Final = {
    "CAP_NET_ADMIN": (12, "nftables, tc, VXLAN devices, ethtool"),
    "CAP_SYS_ADMIN": (21, "bpf(2): finding the program's map again by id"),
}


def capability_sets(status: str) -> dict[str, int]:
    """The Cap* lines of /proc/PID/status as numbers: {"CapEff": ..., "CapAmb": ...}."""
    sets: dict[str, int] = {}
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key.startswith("Cap"):
            sets[key] = int(value.strip(), 16)
    return sets


def missing_capabilities(status: str, *, root: bool) -> list[str]:
    """What the agent lacks of AGENT_CAPABILITIES, one phrase per capability.

    `status` is /proc/self/status. Root's commands get root's capabilities; a
    non-root agent's commands only get the ambient ones."""
    sets = capability_sets(status)
    effective, ambient = sets.get("CapEff", 0), sets.get("CapAmb", 0)
    missing: list[str] = []
    for name, (bit, use) in AGENT_CAPABILITIES.items():
        if not effective >> bit & 1:
            missing.append(f"the capability {name} ({use})")
        elif not root and not ambient >> bit & 1:
            missing.append(
                f"the capability {name} as an ambient capability (the nft, ip and ethtool "
                "commands the agent runs need it too)"
            )
    return missing


def own_missing_capabilities(euid: int) -> list[str]:
    return missing_capabilities(Path("/proc/self/status").read_text(), root=euid == 0)
