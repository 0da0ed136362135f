"""The data plane in real namespaces: what reaches the target, packet by packet.

Each test sets up one kernel configuration and sends many packets through it.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections import Counter

import pytest
from dataplane_lan import (
    SOURCE_IP,
    SOURCE_IP6,
    TARGET_IP,
    TEST_IP,
    Lan,
    rule,
    session,
    state,
    stop,
    wait_listening,
)

from vxtap.dataplane.plan import DEVICES, compile_plan
from vxtap.model import Action, Filter, Protocol

pytestmark = pytest.mark.netns


NSENTER = ("nsenter",)
SEED_TCPDUMP = ("tcpdump", "-i", "eth0", "-l", "udp", "port", "4789", "-nne")


def seed_state(revision: str = "1") -> object:
    inbound_tcp = rule(
        "r-seed",
        1,
        protocol=Protocol.TCP,
        src=f"{TEST_IP}/32",
        dst=f"{SOURCE_IP}/32",
        dports="1234-1234",
    )
    return state(
        [Filter(id="f", name="seed", rules=(inbound_tcp,))], [session("s-seed", "f", 1)], revision
    )


def test_seed_scenario_mirrors_hello_and_12345_and_nothing_else(lan: Lan) -> None:
    plan = compile_plan(seed_state())  # type: ignore[arg-type]
    text = lan.workdir / "tcpdump.txt"
    with text.open("w") as out:
        tcpdump = subprocess.Popen(
            [*NSENTER, f"--net=/var/run/netns/{lan.target.name}", *SEED_TCPDUMP],
            stdout=out,
            stderr=subprocess.PIPE,
        )
    try:
        wait_listening(tcpdump)
        # Captured from before the devices exist: no router solicitation may leak.
        lan.dataplane.apply(plan)
        server = lan.source.popen(["nc", "-l", "1234"], stdout=subprocess.PIPE)
        try:
            time.sleep(0.3)
            lan.test.run(
                [
                    "bash",
                    "-c",
                    f"(echo hello; sleep 0.2; echo 12345; sleep 0.2) | nc -N {SOURCE_IP} 1234",
                ]
            )
            received = server.communicate(timeout=10)[0].decode()
        finally:
            server.kill()
        assert received == "hello\n12345\n"
        # Traffic the filter does not accept: other port, other direction, ICMP, UDP, IPv6.
        lan.test.run(["ping", "-c", "3", "-i", "0.2", SOURCE_IP])
        lan.test.run(["ping", "-c", "2", "-i", "0.2", SOURCE_IP6])
        lan.send_udp(
            lan.test, [(4, SOURCE_IP, 4000, 1234, 10, 20), (6, SOURCE_IP6, 4000, 1234, 10, 5)]
        )
        lan.test.run(["bash", "-c", f"echo x | nc -N -w 1 {SOURCE_IP} 80"], check=False)
        time.sleep(2.5)  # router solicitations would come within this
    finally:
        stop(tcpdump)
    lines = text.read_text().splitlines()
    headers = [line for line in lines if "VXLAN" in line]
    inner = [line for line in lines if "VXLAN" not in line and line.strip()]
    assert headers, "nothing was mirrored"
    assert len(headers) == len(inner)
    for line in headers:
        assert (
            f"{SOURCE_IP}." in line
            and f"> {TARGET_IP}.4789: VXLAN, flags [I] (0x08), vni 1" in line
        )
    flow = re.compile(rf"{re.escape(TEST_IP)}\.\d+ > {re.escape(SOURCE_IP)}\.1234: ")
    for line in inner:
        assert flow.search(line), f"mirrored something the filter does not accept: {line}"
    data = [line for line in inner if "Flags [P.]" in line and line.endswith("length 6")]
    assert len(data) == 2, inner  # "hello\n" and "12345\n"
    assert all("ethertype IPv4 (0x0800), length 72" in line for line in data)
    counters = lan.dataplane.counters()
    assert counters.sessions["s-seed"].packets == len(headers)
    assert counters.rules["r-seed"].packets == len(headers)
    # The mirror devices never got an IPv6 address (no RS, DAD or MLD from them).
    for device in DEVICES:
        assert lan.source.run(["ip", "-6", "addr", "show", "dev", device]).stdout == ""


def test_rule_order_session_priority_mirror_once_disabled_and_empty(lan: Lan) -> None:
    a = Filter(
        id="fa",
        name="a",
        rules=(
            rule("a-accept-udp", 20, protocol=Protocol.UDP, filter_id="fa"),
            rule(
                "a-reject-1000s",
                10,
                Action.REJECT,
                protocol=Protocol.UDP,
                dports="1000-1999",
                filter_id="fa",
            ),
        ),
    )
    b = Filter(
        id="fb",
        name="b",
        rules=(
            rule("b-1500s", 1, protocol=Protocol.UDP, dports="1500-1599", filter_id="fb"),
            rule("b-sport-5000", 2, protocol=Protocol.UDP, sports="5000-5000", filter_id="fb"),
        ),
    )
    everything = Filter(id="fall", name="all", rules=(rule("all", 1, filter_id="fall"),))
    empty = Filter(id="fnone", name="none")
    sessions = [
        session("s-b", "fb", 20, vni=20),  # listed first: order comes from priority
        session("s-a", "fa", 10, vni=10),
        session("s-off", "fall", 5, vni=30, enabled=False),
        session("s-empty", "fnone", 1, vni=40),
    ]
    lan.dataplane.apply(compile_plan(state([a, b, everything, empty], sessions)))
    cases = {
        # (sport, dport): the VNI that must carry it, or None
        (6000, 3000): 10,  # a accepts
        (5000, 3000): 10,  # a accepts first; b would too: mirrored once
        (6000, 1000): None,  # a rejects, b has no match
        (6000, 1500): 20,  # a rejects, b accepts by destination port
        (5000, 1000): 20,  # a rejects, b accepts by source port
        (6000, 1999): None,
        (6000, 2000): 10,
        (6000, 1599): 20,
        (6000, 1600): None,
    }
    per_case = 25
    with lan.capture() as mirrors:
        lan.send_udp(lan.test, [(4, SOURCE_IP, s, d, 20, per_case) for s, d in cases])
    seen = Counter((m.sport, m.dport, m.vni) for m in mirrors)
    expected = Counter({(s, d, vni): per_case for (s, d), vni in cases.items() if vni})
    assert seen == expected
    assert {m.src for m in mirrors} == {TEST_IP}
    counters = lan.dataplane.counters()
    assert counters.sessions["s-a"].packets == 3 * per_case
    assert counters.sessions["s-b"].packets == 3 * per_case
    assert "s-off" not in counters.sessions and "s-empty" not in counters.sessions
    # Rule counters count matches: a's reject matched the 6 cases with ports 1000-1999.
    assert counters.rules["a-reject-1000s"].packets == 6 * per_case
    assert lan.target_vxlan_count() == len(mirrors)
