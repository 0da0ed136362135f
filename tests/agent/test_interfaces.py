"""Which interfaces the agent registers (pure selection, and the real netlink read)."""

from __future__ import annotations

from collections.abc import Callable

from vxtap.agent.interfaces import discover, local_broadcasts, select_interfaces
from vxtap.model import Interface
from vxtap.netns import Namespace, veth


def test_selection_skips_loopback_own_devices_and_refused_addresses() -> None:
    links = [
        {"index": 1, "ifname": "lo", "address": "00:00:00:00:00:00", "kind": None},
        {"index": 2, "ifname": "eth1", "address": "02:00:00:00:00:02", "kind": "veth"},
        {"index": 3, "ifname": "eth0", "address": "02:00:00:00:00:01", "kind": None},
        {"index": 4, "ifname": "vxtap0", "address": "02:00:00:00:00:09", "kind": "vxlan"},
    ]
    addresses = [
        {"index": 1, "family": 2, "address": "127.0.0.1"},
        {"index": 3, "family": 2, "address": "10.0.0.9"},
        {"index": 3, "family": 2, "address": "10.0.0.10"},
        {"index": 3, "family": 10, "address": "fe80::1"},
        {"index": 3, "family": 10, "address": "fd00::1"},
        {"index": 3, "family": 2, "address": "169.254.169.254"},
        {"index": 2, "family": 2, "address": "127.0.0.2"},
        {"index": 2, "family": 10, "address": "ff02::1"},
        {"index": 4, "family": 2, "address": "10.9.9.9"},
    ]
    assert select_interfaces(links, addresses, lambda n: n.startswith("vxtap")) == (
        Interface(
            device="eth0",
            mac="02:00:00:00:00:01",
            ipv4=("10.0.0.9", "10.0.0.10"),
            ipv6=("fd00::1",),
        ),
        Interface(device="eth1", mac="02:00:00:00:00:02"),
    )


def test_discover_reads_a_namespace(make_namespace: Callable[[str], Namespace]) -> None:
    a, b = make_namespace("ag"), make_namespace("ag")
    veth(a, "eth0", b, "eth0")
    a.run(["ip", "addr", "add", "192.0.2.1/24", "dev", "eth0"])
    a.run(["ip", "addr", "add", "2001:db8::1/64", "dev", "eth0", "nodad"])
    found = discover(lambda name: False, lambda argv: a.run(argv).stdout)
    assert [i.device for i in found] == ["eth0"]
    assert found[0].ipv4 == ("192.0.2.1",) and found[0].ipv6 == ("2001:db8::1",)
    assert found[0].mac is not None


def test_local_broadcasts_from_the_local_routing_table() -> None:
    output = (
        '[{"type":"broadcast","dst":"127.255.255.255","dev":"lo","scope":"link"},'
        '{"type":"broadcast","dst":"192.168.50.255","dev":"eth0","scope":"link"}]'
    )
    asked: list[list[str]] = []

    def run(argv: list[str]) -> str:
        asked.append(argv)
        return output

    assert local_broadcasts(run) == {"127.255.255.255", "192.168.50.255"}
    assert asked == [["ip", "-4", "-j", "route", "show", "table", "local", "type", "broadcast"]]
    assert local_broadcasts(lambda argv: "") == frozenset()  # no IPv4 at all
