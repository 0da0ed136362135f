"""`kernel.devices` on output recorded from a real kernel (no root): what it reads, the
commands its ensure sends, and what it says it changed. The namespace tests
(tests/dataplane/test_kernel.py) run the same code against the kernel."""

from __future__ import annotations

import dataclasses
import json

import pytest
from recorded_run import Recorded, recorded

from vxtap.dataplane import diff
from vxtap.dataplane.kernel import DataplaneError, devices
from vxtap.dataplane.kernel.snapshot import NOTHING, Changed, Link, Route

LINKS = "ip -d -j link show"
AFTER_APPLY = {
    LINKS: recorded("ip_link.txt"),
    "ethtool -k vxtap-mk0": recorded("ethtool_mk0.txt"),
    "ethtool -k vxtap-pr0": recorded("ethtool_mk0.txt"),
    "ethtool -k vxtap-mk1": recorded("ethtool_mk1.txt"),
    "ethtool -k vxtap-pr1": recorded("ethtool_mk1.txt"),
}
DEVICE_OFFLOADS_OFF = (
    "tso off gso off "
    + " ".join(f"{name} off" for name in devices.SEGMENTATION_OFFLOADS[2:])
    + " sg off"
)


def applied() -> tuple[dict[str, Link], dict[str, tuple[str, ...]]]:
    run = Recorded(AFTER_APPLY)
    links, _, _ = devices.read_links(run)
    return links, {name: devices.read_offloads(run, name) for name in diff.COPY_DEVICES}


def test_the_link_dump_gives_vxtaps_devices_and_every_devices_mtu() -> None:
    links, mtus, indexes = devices.read_links(Recorded(AFTER_APPLY))
    assert set(links) == diff.OWN_DEVICES
    assert links["vxtap-vx0"] == Link(2, "vxlan", True, None, True, 4789, 1500)
    assert links["vxtap-mk0"] == Link(4, "veth", True, "vxtap-mk1", False, None, 65535)
    assert mtus["lo"] == 65536 and indexes["lo"] == 1


def test_offloads_on_are_read_per_side() -> None:
    fresh = Recorded({"ethtool -k vxtap-mk0": recorded("ethtool_fresh_mk0.txt")})
    on = devices.read_offloads(fresh, "vxtap-mk0")
    assert {"tcp-segmentation-offload", "generic-segmentation-offload"} <= set(on)
    assert {"tx-scatter-gather", "tx-scatter-gather-fraglist", "tx-gso-list"} <= set(on)
    assert "generic-receive-offload" not in on  # off on a fresh veth
    gro_on = recorded("ethtool_mk1.txt").replace(
        "generic-receive-offload: off", "generic-receive-offload: on"
    )
    # On a peer only GRO matters (its segmentation offloads stay on).
    peer = Recorded({"ethtool -k vxtap-mk1": gro_on})
    assert devices.read_offloads(peer, "vxtap-mk1") == ("generic-receive-offload",)
    assert devices.read_offloads(Recorded(AFTER_APPLY), "vxtap-mk0") == ()


def test_devices_as_an_apply_left_them_need_nothing() -> None:
    links, offloads = applied()
    assert diff.device_problems(links, offloads) == []
    run = Recorded(AFTER_APPLY)
    assert devices.fix(run, links, offloads) == NOTHING
    assert run.commands == []


def test_an_empty_namespace_gets_every_device_offloads_off_and_up() -> None:
    run = Recorded(AFTER_APPLY)
    assert diff.device_problems({}, {}) == [
        f"device {name} is missing" for name in ("vxtap-vx0", *diff.COPY_DEVICES)
    ]
    changed = devices.fix(run, {}, {})
    assert changed.devices  # every read about devices is stale
    assert run.commands == [
        "ip link add vxtap-vx0 type vxlan external dstport 4789 nolearning",
        "ip link add vxtap-mk0 mtu 65535 type veth peer name vxtap-mk1",
        "ip link set dev vxtap-mk1 mtu 65535",
        "ip link add vxtap-pr0 mtu 65535 type veth peer name vxtap-pr1",
        "ip link set dev vxtap-pr1 mtu 65535",
        *(f"ip link set dev {name} addrgenmode none" for name in ("vxtap-vx0", *diff.COPY_DEVICES)),
        f"ethtool -K vxtap-mk0 {DEVICE_OFFLOADS_OFF}",
        "ethtool -k vxtap-mk0",  # each change checked
        "ethtool -K vxtap-mk1 gro off",
        "ethtool -k vxtap-mk1",
        f"ethtool -K vxtap-pr0 {DEVICE_OFFLOADS_OFF}",
        "ethtool -k vxtap-pr0",
        "ethtool -K vxtap-pr1 gro off",
        "ethtool -k vxtap-pr1",
        *(f"ip link set dev {name} up" for name in ("vxtap-vx0", *diff.COPY_DEVICES)),
    ]


def test_offloads_turned_back_on_are_turned_off_and_said_changed() -> None:
    links, offloads = applied()
    offloads["vxtap-pr0"] = ("tcp-segmentation-offload",)
    assert diff.device_problems(links, offloads) == [
        "device vxtap-pr0 has offloads on: tcp-segmentation-offload"
    ]
    run = Recorded(AFTER_APPLY)
    assert devices.fix(run, links, offloads) == Changed(offloads=frozenset({"vxtap-pr0"}))
    assert run.commands == [f"ethtool -K vxtap-pr0 {DEVICE_OFFLOADS_OFF}", "ethtool -k vxtap-pr0"]


def test_offloads_the_kernel_keeps_on_fail_with_their_names() -> None:
    links, offloads = applied()
    offloads["vxtap-mk0"] = ("tcp-segmentation-offload",)
    stubborn = Recorded({**AFTER_APPLY, "ethtool -k vxtap-mk0": recorded("ethtool_fresh_mk0.txt")})
    with pytest.raises(DataplaneError, match=r"vxtap-mk0 keeps offloads on: .*tcp-segmentation"):
        devices.fix(stubborn, links, offloads)


def test_a_copy_device_with_another_mtu_gets_its_mtu_back() -> None:
    links, offloads = applied()
    links["vxtap-mk1"] = dataclasses.replace(links["vxtap-mk1"], mtu=1500)
    assert diff.device_problems(links, offloads) == ["device vxtap-mk1 has MTU 1500, not 65535"]
    run = Recorded(AFTER_APPLY)
    assert devices.fix(run, links, offloads) == Changed(links=True)
    assert run.commands == ["ip link set dev vxtap-mk1 mtu 65535"]


def test_a_device_set_down_is_set_up() -> None:
    links, offloads = applied()
    links["vxtap-vx0"] = dataclasses.replace(links["vxtap-vx0"], up=False)
    assert diff.device_problems(links, offloads) == ["device vxtap-vx0 is down"]
    run = Recorded(AFTER_APPLY)
    assert devices.fix(run, links, offloads) == Changed(links=True)
    assert run.commands == ["ip link set dev vxtap-vx0 up"]


def test_a_vxlan_device_on_another_port_is_replaced() -> None:
    links, offloads = applied()
    links["vxtap-vx0"] = dataclasses.replace(links["vxtap-vx0"], port=8472)
    assert diff.device_problems(links, offloads) == [
        "device vxtap-vx0 is not an external VXLAN device on 4789"
    ]
    run = Recorded(AFTER_APPLY)
    assert devices.fix(run, links, offloads).devices
    assert run.commands == [
        "ip link del dev vxtap-vx0",
        "ip link add vxtap-vx0 type vxlan external dstport 4789 nolearning",
        "ip link set dev vxtap-vx0 addrgenmode none",
        "ip link set dev vxtap-vx0 up",
    ]


def test_a_broken_pair_is_made_again() -> None:
    links, offloads = applied()
    del links["vxtap-pr1"]
    assert diff.device_problems(links, offloads) == ["device vxtap-pr1 is missing"]
    run = Recorded(AFTER_APPLY)
    assert devices.fix(run, links, offloads).devices
    assert run.commands[:3] == [
        "ip link del dev vxtap-pr0",
        "ip link add vxtap-pr0 mtu 65535 type veth peer name vxtap-pr1",
        "ip link set dev vxtap-pr1 mtu 65535",
    ]
    assert "ip link set dev vxtap-mk0 up" not in run.commands  # the other pair is left alone


def test_a_refused_command_names_itself() -> None:
    run = Recorded(refused={"ip link set dev vxtap-vx0 up": "RTNETLINK answers: No buffer"})
    links, offloads = applied()
    links["vxtap-vx0"] = dataclasses.replace(links["vxtap-vx0"], up=False)
    with pytest.raises(DataplaneError, match=r"^ip link set dev vxtap-vx0 up: RTNETLINK answers"):
        devices.fix(run, links, offloads)


def test_routes_give_each_targets_mtu_device_and_source() -> None:
    _, mtus, indexes = devices.read_links(Recorded({LINKS: recorded("ip_link_routes.txt")}))
    remotes = ["10.9.0.5", "172.16.0.1", "192.168.0.164", "192.168.0.230"]
    run = Recorded({"ip -force -j -batch -": recorded("routes.txt")})
    routes = devices.read_routes(run, remotes, mtus, indexes)
    assert run.stdins == ["".join(f"route get {a}\n" for a in remotes)]  # one process
    assert routes == {
        "10.9.0.5": Route(1400, 3, "192.168.0.230"),  # the route's own MTU
        "192.168.0.164": Route(9000, 3, "192.168.0.230"),  # its device's
        "192.168.0.230": Route(65536, None, "192.168.0.230"),  # local: stays on the device
    }  # 172.16.0.1 has no route
    locked = recorded("routes.txt").replace(
        '"metrics":[{"mtu":1400}]', '"metrics":[{"mtu":["lock",1300]}]'
    )
    assert json.loads(locked.splitlines()[1])[0]["metrics"] == [{"mtu": ["lock", 1300]}]
    routes = devices.read_routes(
        Recorded({"ip -force -j -batch -": locked}), remotes, mtus, indexes
    )
    assert routes["10.9.0.5"].mtu == 1300
