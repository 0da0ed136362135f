"""The lab's networks, built in namespaces with `vxtap.netns` and pyroute2.

    vxtap-lab-vpc    bridge `vpc` (the VPC subnet's switch) + the security groups
    vxtap-lab-mgmt   bridge `mgmt` 10.255.0.1/24: `vxtap server` listens here
    vxtap-lab-<ECS>  eth0 on the VPC (the scenario's address and MAC),
                     mgmt0 on the management network (10.255.0.10+i/24)

Nothing is created in the host's namespace: veth pairs are born there under
throwaway names and moved at once (`vxtap.netns.veth`). Every step is an
"ensure": running `build` on a half-built lab finishes it.
"""

from __future__ import annotations

import ipaddress
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

from vxtap.lab import secgroups
from vxtap.lab.runtime import LabError
from vxtap.lab.scenario import SERVER_DEVICE, VPC_SUBNET, Scenario, Server
from vxtap.netns import Namespace, veth

MGMT_NETWORK = ipaddress.IPv4Network("10.255.0.0/24")
MGMT_SERVER_ADDRESS = "10.255.0.1"
API_PORT = 9696
VPC_BRIDGE = "vpc"
MGMT_BRIDGE = "mgmt"
MGMT_DEVICE = "mgmt0"


@dataclass(frozen=True)
class Topology:
    prefix: str
    scenario: Scenario

    @property
    def vpc(self) -> Namespace:
        return Namespace(f"{self.prefix}vpc")

    @property
    def mgmt(self) -> Namespace:
        return Namespace(f"{self.prefix}mgmt")

    def server(self, name: str) -> Namespace:
        return Namespace(f"{self.prefix}{name}")

    @property
    def namespaces(self) -> list[Namespace]:
        return [self.vpc, self.mgmt, *(self.server(s.name) for s in self.scenario.servers)]

    @property
    def endpoint(self) -> str:
        return f"https://{MGMT_SERVER_ADDRESS}:{API_PORT}"

    def mgmt_address(self, server: Server) -> str:
        index = self.scenario.servers.index(server)
        return str(MGMT_NETWORK.network_address + 10 + index)


def _has_link(ns: Namespace, ifname: str) -> bool:
    with ns.iproute() as ipr:
        return bool(ipr.link_lookup(ifname=ifname))


def _ensure_bridge(ns: Namespace, name: str, address: str | None = None) -> None:
    with ns.iproute() as ipr:
        if not ipr.link_lookup(ifname=name):
            ipr.link("add", ifname=name, kind="bridge")
        idx = ipr.link_lookup(ifname=name)[0]
        ipr.link("set", index=idx, state="up")
        if address is not None:
            _ensure_address(ipr, idx, address, MGMT_NETWORK.prefixlen)


def _ensure_address(ipr: object, idx: int, address: str, prefixlen: int) -> None:
    present = {
        a.get_attr("IFA_ADDRESS")
        for a in ipr.get_addr(index=idx)  # type: ignore[attr-defined]
    }
    if address not in present:
        ipr.addr("add", index=idx, address=address, prefixlen=prefixlen)  # type: ignore[attr-defined]


def _attach(
    server_ns: Namespace,
    device: str,
    switch_ns: Namespace,
    switch_port: str,
    bridge: str,
    address: str,
    prefixlen: int,
    mac: str | None = None,
) -> None:
    """A veth from `server_ns`'s `device` to a port of `bridge` in `switch_ns`."""
    if not _has_link(server_ns, device):
        if _has_link(switch_ns, switch_port):  # half of an interrupted attach
            with switch_ns.iproute() as ipr:
                ipr.link("del", index=ipr.link_lookup(ifname=switch_port)[0])
        veth(server_ns, device, switch_ns, switch_port)
    with switch_ns.iproute() as ipr:
        port = ipr.link_lookup(ifname=switch_port)[0]
        master = ipr.link_lookup(ifname=bridge)[0]
        ipr.link("set", index=port, master=master, state="up")
    with server_ns.iproute() as ipr:
        idx = ipr.link_lookup(ifname=device)[0]
        if mac is not None:
            ipr.link("set", index=idx, state="down")
            ipr.link("set", index=idx, address=mac)
        ipr.link("set", index=idx, state="up")
        _ensure_address(ipr, idx, address, prefixlen)


def _ensure_br_netfilter(vpc: Namespace, say: Callable[[str], None]) -> None:
    """The security groups need br_netfilter (built into some kernels, a module
    in most distributions, where it is not loaded by default)."""
    probe = ["sysctl", "-n", "net.bridge.bridge-nf-call-iptables"]
    if vpc.run(probe, check=False).returncode == 0:
        return
    loaded = subprocess.run(["modprobe", "br_netfilter"], capture_output=True, text=True)
    if loaded.returncode != 0 or vpc.run(probe, check=False).returncode != 0:
        raise LabError(
            "the lab's security groups need the kernel's br_netfilter, and "
            f"'modprobe br_netfilter' failed: {loaded.stderr.strip() or 'no such sysctl after'}"
        )
    say(
        "loaded kernel module br_netfilter for the lab's security groups (note: bridges "
        "elsewhere on this host now pass their IP traffic through netfilter as well)"
    )


def build(topology: Topology, say: Callable[[str], None] = lambda _: None) -> None:
    """Create (or finish creating) every namespace, link, address and the
    security groups of the scenario."""
    scenario = topology.scenario
    vpc = Namespace.create(topology.vpc.name)
    mgmt = Namespace.create(topology.mgmt.name)
    _ensure_bridge(vpc, VPC_BRIDGE)
    _ensure_bridge(mgmt, MGMT_BRIDGE, MGMT_SERVER_ADDRESS)
    _ensure_br_netfilter(vpc, say)
    # Bridged IP passes the inet hooks of this namespace (per-namespace sysctl;
    # the host's own setting is not touched), which is where the groups live.
    for family in ("iptables", "ip6tables"):
        vpc.run(["sysctl", "-q", "-w", f"net.bridge.bridge-nf-call-{family}=1"])
    for index, server in enumerate(scenario.servers):
        ns = Namespace.create(topology.server(server.name).name)
        _attach(
            ns,
            SERVER_DEVICE,
            vpc,
            f"port{index}",
            VPC_BRIDGE,
            server.ipv4,
            VPC_SUBNET.prefixlen,
            server.mac,
        )
        _attach(
            ns,
            MGMT_DEVICE,
            mgmt,
            f"m{index}",
            MGMT_BRIDGE,
            topology.mgmt_address(server),
            MGMT_NETWORK.prefixlen,
        )
    apply_security_groups(topology)


def apply_security_groups(topology: Topology) -> None:
    topology.vpc.run(["nft", "-f", "-"], input=secgroups.render(topology.scenario))


def dropped_by_groups(topology: Topology) -> dict[str, int]:
    """Packets each server's security groups dropped so far."""
    out: dict[str, int] = {}
    for server in topology.scenario.servers:
        name = secgroups.drop_counter(server.name)
        result = topology.vpc.run(
            ["nft", "list", "counter", "inet", secgroups.TABLE, name], check=False
        )
        for token_index, token in enumerate(words := result.stdout.split()):
            if token == "packets":
                out[server.name] = int(words[token_index + 1])
                break
    return out
