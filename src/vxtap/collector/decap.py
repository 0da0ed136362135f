"""--decap: one kernel VXLAN interface per VNI that carries the original frames.

The kernel decapsulates (no Python per packet): a VXLAN device with the VNI and
port receives the datagrams and hands the inner frames to its interface, where
`tcpdump -i vxtap-vni1`, Suricata or Zeek read them. The interfaces have no
address, IPv6 off and learning off, so the host's own stack neither answers
nor sends anything on them; they are removed when the collector exits.

Names: `vxtap-vni<N>`; a VNI above 999999 does not fit the 15-character limit
of interface names and becomes `vxtap-x<6 hex digits>`.
"""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from vxtap.collector.ring import Listen

MAX_INTERFACES = 64  # a stream of random VNIs must not create interfaces without bound


def interface_name(vni: int) -> str:
    name = f"vxtap-vni{vni}"
    return name if len(name) <= 15 else f"vxtap-x{vni:06x}"


class DecapError(RuntimeError):
    pass


class DecapInterfaces:
    def __init__(self, listen: Listen, *, max_interfaces: int = MAX_INTERFACES) -> None:
        self.listen = listen
        self.max_interfaces = max_interfaces
        self.names: dict[int, str] = {}
        self.refused: set[int] = set()
        self.ipr = IPRoute()

    def _spec_matches(self, link: object, vni: int) -> bool:
        info = link.get_attr("IFLA_LINKINFO")  # type: ignore[attr-defined]
        if info is None or info.get_attr("IFLA_INFO_KIND") != "vxlan":
            return False
        data = info.get_attr("IFLA_INFO_DATA")
        return bool(
            data.get_attr("IFLA_VXLAN_ID") == vni
            and data.get_attr("IFLA_VXLAN_PORT") == self.listen.port
        )

    def ensure(self, vni: int) -> str | None:
        """The interface for `vni`, created if needed; None once the limit is reached."""
        if vni in self.names:
            return self.names[vni]
        if len(self.names) >= self.max_interfaces:
            self.refused.add(vni)
            return None
        name = interface_name(vni)
        existing = self.ipr.link_lookup(ifname=name)
        if existing and not self._spec_matches(self.ipr.get_links(existing[0])[0], vni):
            self.ipr.link("del", index=existing[0])  # ours by name, but not as specified
            existing = []
        if not existing:
            spec: dict[str, object] = {
                "ifname": name,
                "kind": "vxlan",
                "vxlan_id": vni,
                "vxlan_port": self.listen.port,
                "vxlan_learning": 0,
            }
            # The kernel device listens on one family: IPv6 only when the address says so.
            address = self.listen.address
            if address is not None:
                spec["vxlan_local" if address.version == 4 else "vxlan_local6"] = str(address)
            elif self.listen.family == socket.AF_INET6:
                spec["vxlan_local6"] = "::"
            try:
                self.ipr.link("add", **spec)
            except NetlinkError as e:
                raise DecapError(
                    f"cannot create decap interface {name} for VNI {vni}: {e.args[-1]}"
                    " (another VXLAN device with this VNI and port?)"
                ) from None
        index = self.ipr.link_lookup(ifname=name)[0]
        try:
            self._bring_up(name, index, vni)
        except DecapError:
            with contextlib.suppress(NetlinkError):
                self.ipr.link("del", index=index)  # not half made: gone again
            raise
        self.names[vni] = name
        return name

    def _bring_up(self, name: str, index: int, vni: int) -> None:
        # Before link up: no IPv6 link-local address, no router solicitations.
        sysctl = Path(f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6")
        if sysctl.exists():
            sysctl.write_text("1")
        try:
            self.ipr.link("set", index=index, state="up")
        except NetlinkError as e:
            raise DecapError(
                f"cannot bring up {name}: {e.args[-1]} (is UDP port {self.listen.port} used by"
                " another program? --decap needs the kernel to own it)"
            ) from None
        link = self.ipr.get_links(index)[0]
        if not self._spec_matches(link, vni) or link.get_attr("IFLA_OPERSTATE") == "DOWN":
            raise DecapError(f"decap interface {name} is not as specified after creation")

    def close(self) -> None:
        for name in self.names.values():
            with contextlib.suppress(NetlinkError, IndexError):
                self.ipr.link("del", index=self.ipr.link_lookup(ifname=name)[0])
        self.names.clear()
        self.ipr.close()
