"""The agent's data plane works with only the capabilities docs/deploy.md lists, as a
non-root user, and names the capability that is missing when one is."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from vxtap.dataplane.capabilities import AGENT_CAPABILITIES, missing_capabilities
from vxtap.netns import Namespace

NOBODY = 65534
HERE = Path(__file__).parent


def status(effective: int, ambient: int) -> str:
    return f"Name:\tx\nCapInh:\t0\nCapPrm:\t{effective:016x}\nCapEff:\t{effective:016x}\n" + (
        f"CapBnd:\t{effective:016x}\nCapAmb:\t{ambient:016x}\n"
    )


ALL = sum(1 << bit for bit, _ in AGENT_CAPABILITIES.values())


def test_the_agent_needs_net_admin_and_sys_admin() -> None:
    assert sorted(AGENT_CAPABILITIES) == ["CAP_NET_ADMIN", "CAP_SYS_ADMIN"]
    assert missing_capabilities(status(ALL, ALL), root=False) == []
    assert missing_capabilities(status(ALL, 0), root=True) == []
    assert missing_capabilities(status(1 << 12, 1 << 12), root=False) == [
        "the capability CAP_SYS_ADMIN (bpf(2): finding the program's map again by id)"
    ]
    assert missing_capabilities(status(0, 0), root=True) == [
        "the capability CAP_NET_ADMIN (nftables, tc, VXLAN devices, ethtool)",
        "the capability CAP_SYS_ADMIN (bpf(2): finding the program's map again by id)",
    ]


def test_a_non_root_agent_needs_them_ambient_for_the_commands_it_runs() -> None:
    (only,) = missing_capabilities(status(ALL, 1 << 12), root=False)
    assert only.startswith("the capability CAP_SYS_ADMIN as an ambient capability")


def setpriv(capabilities: Sequence[str]) -> list[str]:
    """Run as user nobody with exactly these capabilities (inherited by its commands)."""
    caps = ",".join(["-all", *(f"+{c.removeprefix('CAP_').lower()}" for c in capabilities)])
    return [
        "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
        f"--inh-caps={caps}", f"--ambient-caps={caps}", f"--bounding-set={caps}",
    ]  # fmt: skip


# Applies the seed session of tests/dataplane/test_kernel.py, reads its counters back
# (which finds the map by id), and removes it again.
APPLY = f"""
import sys
sys.path[:0] = [{str(HERE)!r}, {str(HERE.parent)!r}]
from test_kernel import seed_state
from vxtap.dataplane.kernel import Dataplane
from vxtap.dataplane.plan import compile_plan
dataplane = Dataplane()
missing = dataplane.missing_prerequisites()
print("missing:", "; ".join(missing))
if not missing:
    try:
        dataplane.apply(compile_plan(seed_state()))
        print("drift:", dataplane.drift(compile_plan(seed_state())))
        print("counted sessions:", sorted(dataplane.counters().sessions))
    finally:
        dataplane.cleanup()
"""


@pytest.fixture
def host(make_namespace: Callable[[str], Namespace]) -> Namespace:
    if subprocess.run(["setpriv", "--version"], capture_output=True).returncode != 0:
        pytest.skip("setpriv (util-linux) is missing")
    ns = make_namespace("caps")
    ns.run(["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "p0"])
    for device in ("eth0", "p0"):
        ns.run(["ip", "link", "set", device, "up"])
    ns.run(["ip", "addr", "add", "192.168.0.230/24", "dev", "eth0"])
    return ns


def run_as_nobody(host: Namespace, capabilities: Sequence[str]) -> str:
    out = host.run([*setpriv(capabilities), sys.executable, "-c", APPLY], check=False, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_nobody_with_the_listed_capabilities_applies_a_session(host: Namespace) -> None:
    assert os.geteuid() == 0  # the fixture made a namespace
    output = run_as_nobody(host, list(AGENT_CAPABILITIES))
    assert output.splitlines() == [
        "missing: ",
        "drift: []",
        "counted sessions: ['s-seed']",
    ], output


@pytest.mark.parametrize("dropped", sorted(AGENT_CAPABILITIES))
def test_without_one_capability_the_check_names_it(host: Namespace, dropped: str) -> None:
    output = run_as_nobody(host, [c for c in AGENT_CAPABILITIES if c != dropped])
    assert output.startswith(f"missing: the capability {dropped} ("), output
    assert output.count("the capability") == 1


FIND_MAP_BY_ID = """
from vxtap.dataplane.bpf import asm, syscall
map_fd = syscall.create_tunnel_map()
scratch_fd = syscall.create_scratch_map()
code = asm.program(asm.ProgramKind.MIRROR, map_fd, scratch_fd)
program = syscall.load_program(code, "vxtap_caps")
try:
    syscall.map_fd_by_id(syscall.prog_map_ids(program)[0])
except OSError as error:
    print(error)
"""


def test_cap_bpf_is_not_enough_to_find_the_map_again(host: Namespace) -> None:
    """Why CAP_SYS_ADMIN and not CAP_BPF: creating and loading work with CAP_BPF, finding
    the map of a running program by id does not."""
    out = host.run(
        [*setpriv(["CAP_NET_ADMIN", "CAP_BPF"]), sys.executable, "-c", FIND_MAP_BY_ID],
        check=False,
    )
    assert (out.returncode, out.stdout) == (
        0, "[Errno 1] bpf(MAP_GET_FD_BY_ID): Operation not permitted\n",
    ), out.stderr  # fmt: skip
