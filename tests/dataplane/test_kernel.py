"""The data plane in real namespaces: what reaches the target, packet by packet.

Each test sets up one kernel configuration and sends many packets through it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Sequence

import pytest

from support.dataplane_lan import (
    SOURCE_IP,
    SOURCE_IP6,
    SOURCE_PORT,
    TARGET6_PORT,
    TARGET_IP,
    TARGET_IP6,
    TEST_IP,
    Lan,
    rule,
    session,
    state,
    stop,
    wait_listening,
)
from vxtap.dataplane.bpf import asm, syscall
from vxtap.dataplane.kernel import Dataplane, DataplaneError, nftables
from vxtap.dataplane.kernel.snapshot import TableState
from vxtap.dataplane.plan import DEVICES, KernelPlan, compile_plan, session_key
from vxtap.model import Action, DesiredState, Direction, EtherType, Filter, Protocol
from vxtap.netns import Namespace, veth

pytestmark = pytest.mark.netns


NSENTER = ("nsenter",)
SEED_TCPDUMP = ("tcpdump", "-i", "eth0", "-l", "udp", "port", "4789", "-nne")


def seed_state(revision: str = "1") -> DesiredState:
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
    plan = compile_plan(seed_state())
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
            stop(server, signal.SIGKILL)
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


def test_ipv6_egress_symmetric_source_port_and_own_output_never_mirrored(lan: Lan) -> None:
    v4, v6 = EtherType.IPV4, EtherType.IPV6
    main = Filter(
        id="f1",
        name="main",
        rules=(
            rule(
                "in-v6-udp",
                1,
                ethertype=v6,
                protocol=Protocol.UDP,
                dports="7000-7010",
                filter_id="f1",
            ),
            rule(
                "in-tcp", 2, ethertype=v4, protocol=Protocol.TCP, dports="1234-1234", filter_id="f1"
            ),
            rule(
                "out-tcp",
                1,
                direction=Direction.EGRESS,
                protocol=Protocol.TCP,
                sports="1234-1234",
                filter_id="f1",
            ),
            # Matches the mirror's own VXLAN output too, which must still never be mirrored.
            rule(
                "out-udp",
                2,
                direction=Direction.EGRESS,
                ethertype=v4,
                protocol=Protocol.UDP,
                filter_id="f1",
            ),
        ),
    )
    six = Filter(
        id="f2",
        name="six",
        rules=(
            rule(
                "in-7100",
                1,
                ethertype=v6,
                protocol=Protocol.UDP,
                dports="7100-7100",
                filter_id="f2",
            ),
        ),
    )
    sessions = [
        session("s-v4", "f1", 1, vni=100),
        session("s-v6", "f2", 2, vni=200, target=TARGET6_PORT),
    ]
    lan.dataplane.apply(compile_plan(state([main, six], sessions)))
    with lan.capture() as mirrors:
        lan.send_udp(
            lan.test, [(6, SOURCE_IP6, 5555, port, 30, 20) for port in (7000, 7010, 7011, 7100)]
        )
        lan.send_udp(lan.source, [(4, TEST_IP, 5556, 9000, 30, 20)])
        server = lan.source.popen(["bash", "-c", "echo reply | nc -l 1234"], stdout=subprocess.PIPE)
        try:
            time.sleep(0.3)
            out = lan.test.run(["bash", "-c", f"(echo hello; sleep 0.3) | nc -N {SOURCE_IP} 1234"])
            assert out.stdout == "reply\n"
        finally:
            stop(server, signal.SIGKILL)
    by_case = Counter((m.vni, m.dport, m.outer_version) for m in mirrors if m.protocol == 17)
    assert by_case == {
        (100, 7000, 4): 20,
        (100, 7010, 4): 20,
        (200, 7100, 6): 20,
        (100, 9000, 4): 20,
    }
    for m in mirrors:
        assert m.dport != 4789 and m.sport != 4789  # VXLAN in VXLAN: the mirror of a mirror
        if m.outer_version == 6:
            assert (m.outer_src, m.outer_dst) == (SOURCE_IP6, TARGET_IP6)
        else:
            assert (m.outer_src, m.outer_dst) == (SOURCE_IP, TARGET_IP)
    flow = [m for m in mirrors if m.protocol == 6]
    inbound = [m for m in flow if m.dport == 1234 and m.src == TEST_IP]
    outbound = [m for m in flow if m.sport == 1234 and m.src == SOURCE_IP]
    assert inbound and outbound and len(inbound) + len(outbound) == len(flow)
    # Both directions of the flow leave with the same outer UDP source port.
    assert len({m.outer_sport for m in flow}) == 1, sorted({m.outer_sport for m in flow})
    assert lan.target_vxlan_count() == len(mirrors)


def test_truncation_lengths_and_one_mirror_per_wire_packet(lan: Lan) -> None:
    def only(fid: str, *rules: object) -> Filter:
        return Filter(id=fid, name=fid, rules=tuple(rules))  # type: ignore[arg-type]

    udp, tcp = Protocol.UDP, Protocol.TCP
    filters = [
        only(
            "f40",
            rule("udp-9001", 1, protocol=udp, dports="9001-9001", filter_id="f40"),
            rule("icmp", 2, protocol=Protocol.ICMP, filter_id="f40"),
        ),
        only("f1460", rule("udp-9002", 1, protocol=udp, dports="9002-9002", filter_id="f1460")),
        only("f96", rule("tcp-5201", 1, protocol=tcp, dports="5201-5201", filter_id="f96")),
    ]
    sessions = [
        session("s40", "f40", 1, vni=40, packet_length=40),  # inside the UDP header
        session("s1460", "f1460", 2, vni=1460, packet_length=1460),  # fits: MTU - 36 = 1464
        session("s96", "f96", 3, vni=96),
    ]
    lan.dataplane.apply(compile_plan(state(filters, sessions)))
    bulk = 3_000_000
    with lan.capture() as mirrors:
        lan.send_udp(
            lan.test,
            [
                (4, SOURCE_IP, 6001, 9001, 1000, 10),
                (4, SOURCE_IP, 6002, 9001, 10, 10),
                (4, SOURCE_IP, 6003, 9002, 1472, 10),  # a 1514-byte frame
                (4, SOURCE_IP, 6004, 9002, 100, 10),
            ],
        )
        lan.test.run(["ping", "-c", "5", "-i", "0.05", "-s", "1000", SOURCE_IP])
        sink = lan.source.popen(["nc", "-l", "5201"], stdout=subprocess.DEVNULL)
        try:
            time.sleep(0.3)
            lan.test.run(["bash", "-c", f"head -c {bulk} /dev/zero | nc -N {SOURCE_IP} 5201"])
            sink.wait(timeout=30)
        finally:
            sink.kill()
    lengths: dict[tuple[int, int | None], set[int]] = {}
    for m in mirrors:
        lengths.setdefault((m.vni, m.sport if m.protocol == 17 else m.protocol), set()).add(
            m.inner_length
        )
    # Cut to exactly 40, also inside the UDP header (the kernel alone refuses below 42).
    assert lengths[(40, 6001)] == {40}
    assert lengths[(40, 6002)] == {40}
    assert lengths[(40, 1)] == {40}
    assert lengths[(1460, 6003)] == {1460}  # as asked: 20 + 8 + 8 + 1460 fits 1500
    assert lengths[(1460, 6004)] == {142}  # shorter than asked: whole
    data = [m for m in mirrors if m.vni == 96 and m.src == TEST_IP]
    assert all(m.inner_length <= 96 for m in data)
    # Segmented before truncation: wire-sized packets that add up to the whole transfer.
    assert max(m.ip_length or 0 for m in data) <= 1500
    payload = sum(m.tcp_payload or 0 for m in data)
    assert bulk <= payload <= bulk * 1.01, payload
    assert lan.target_vxlan_count() == len(mirrors)


def _udp_all(fid: str = "f") -> Filter:
    return Filter(
        id=fid,
        name=fid,
        rules=(
            rule(f"{fid}-in", 1, protocol=Protocol.UDP, filter_id=fid),
            rule(f"{fid}-out", 1, direction=Direction.EGRESS, protocol=Protocol.UDP, filter_id=fid),
        ),
    )


def _kernel_snapshot(lan: Lan) -> tuple[str, str, str]:
    """Rule handles, devices (with ifindex) and program ids: equal means nothing was redone."""
    nft = lan.source.run(["nft", "-a", "list", "table", "netdev", "vxtap"]).stdout
    links = lan.source.run(["ip", "-o", "link"]).stdout
    progs = "".join(
        lan.source.run(["tc", "filter", "show", "dev", d, "ingress"]).stdout
        for d in ("vxtap-mk1", "vxtap-pr1")
    )
    return nft, links, progs


def _prog_ids(lan: Lan) -> list[int]:
    ids = []
    for device in ("vxtap-mk1", "vxtap-pr1"):
        out = lan.source.run(["tc", "filter", "show", "dev", device, "ingress"]).stdout
        ids += [int(x) for x in re.findall(r" id (\d+) ", out)]
    return ids


def test_sources_added_and_removed_at_run_time_and_reapply_is_a_no_op(lan: Lan) -> None:
    traffic = [(4, SOURCE_IP, 6000, 7000, 20, 10)]
    no_source = session("s", "f", 1, vni=7, sources=())
    lan.dataplane.apply(compile_plan(state([_udp_all()], [no_source])))
    assert lan.dataplane.leftovers() == []
    with lan.capture() as mirrors:
        lan.send_udp(lan.test, traffic)
    assert mirrors == []

    both = [session("s", "f", 1, vni=7), session("s2", "f2", 2, vni=8)]
    plan = compile_plan(state([_udp_all(), _udp_all("f2")], both, "2"))
    lan.dataplane.apply(plan)
    before = _kernel_snapshot(lan)
    lan.dataplane.apply(compile_plan(state([_udp_all(), _udp_all("f2")], both, "2")))
    assert _kernel_snapshot(lan) == before  # same state: the kernel was left alone
    assert lan.dataplane.drift(plan) == []
    with lan.capture() as mirrors:
        lan.send_udp(lan.test, traffic)
    assert Counter(m.vni for m in mirrors) == {7: 10}

    # Session s loses its source: s2 (next priority) mirrors now; counters keep their totals.
    one = [session("s", "f", 1, vni=7, sources=()), session("s2", "f2", 2, vni=8)]
    lan.dataplane.apply(compile_plan(state([_udp_all(), _udp_all("f2")], one, "3")))
    with lan.capture() as mirrors:
        lan.send_udp(lan.test, traffic)
    assert Counter(m.vni for m in mirrors) == {8: 10}
    assert "s" not in lan.dataplane.counters().sessions

    progs = _prog_ids(lan)
    assert len(progs) == 2
    lan.dataplane.apply(compile_plan(state([_udp_all(), _udp_all("f2")], [no_source], "4")))
    with lan.capture() as mirrors:
        lan.send_udp(lan.test, traffic)
    assert mirrors == []
    # Nothing left: no table, no devices, and the programs (with their map) are gone.
    assert lan.dataplane.leftovers() == []
    assert "vxtap" not in lan.source.run(["nft", "list", "tables"]).stdout
    for prog_id in progs:
        with pytest.raises(OSError):
            syscall.prog_fd_by_id(prog_id)


def _ping_loss(lan: Lan) -> str:
    # 100 echoes 2 ms apart (root may go below the 10 ms used before): the same evidence;
    # the test that calls this 22 times took 35 s, now 6 s.
    out = lan.test.run(
        ["ping", "-c", "100", "-i", "0.002", "-W", "1", "-q", SOURCE_IP], check=False
    )
    return re.findall(r"(\d+)% packet loss", out.stdout)[0]


def test_failures_never_harm_production_and_apply_repairs(lan: Lan) -> None:
    icmp = Filter(id="f", name="f", rules=(rule("all-in", 1, filter_id="f"),))
    plan = compile_plan(state([icmp], [session("s", "f", 1)]))
    lan.dataplane.apply(plan)
    assert _ping_loss(lan) == "0"
    mirrored = lan.target_vxlan_count()
    assert mirrored >= 100

    # Target down or unreachable: production unharmed, kernel state unchanged.
    lan.target.run(["ip", "link", "set", "eth0", "down"])
    assert _ping_loss(lan) == "0"
    assert lan.dataplane.drift(plan) == []
    lan.target.run(["ip", "link", "set", "eth0", "up"])
    lan.target.run(["ip", "addr", "del", f"{TARGET_IP}/24", "dev", "eth0"])  # unreachable
    assert _ping_loss(lan) == "0"
    assert lan.dataplane.drift(plan) == []
    lan.target.run(["ip", "addr", "add", f"{TARGET_IP}/24", "dev", "eth0"])

    base_chain = next(c.name for c in plan.chains if c.hook is not None)
    breakages = {
        f"base chain {base_chain} does not hold": [
            "nft",
            "flush",
            "chain",
            "netdev",
            "vxtap",
            base_chain,
        ],
        "device vxtap-vx0 is missing": ["ip", "link", "del", "vxtap-vx0"],
        "nft table netdev vxtap is missing": ["nft", "delete", "table", "netdev", "vxtap"],
        "device vxtap-mk0 is missing": ["ip", "link", "del", "vxtap-mk0"],
        "not in the plan": ["nft", "add", "chain", "netdev", "vxtap", "intruder"],
        "device vxtap-pr1 is down": ["ip", "link", "set", "vxtap-pr1", "down"],
        "device vxtap-mk0 has offloads on": ["ethtool", "-K", "vxtap-mk0", "tso", "on"],
        "device vxtap-pr0 has offloads on: tx-scatter-gather": [
            "ethtool",
            "-K",
            "vxtap-pr0",
            "sg",
            "on",
        ],
    }
    for expected, command in breakages.items():
        lan.source.run(command)
        assert _ping_loss(lan) == "0", command
        problems = lan.dataplane.drift(plan)
        assert any(expected in p for p in problems), (command, problems)
        lan.dataplane.apply(plan)  # repairs, and verifies
        assert lan.dataplane.drift(plan) == []
        before = lan.target_vxlan_count()
        assert _ping_loss(lan) == "0"
        assert lan.target_vxlan_count() - before == 100, command  # mirroring resumed

    # A re-created mk0 leaves `dup to` bound to the old ifindex: seen and repaired.
    lan.source.run(["ip", "link", "del", "vxtap-mk0"])
    lan.source.run(["ip", "link", "add", "vxtap-mk0", "type", "veth", "peer", "vxtap-mk1"])
    assert any("stale" in p for p in lan.dataplane.drift(plan))
    lan.dataplane.apply(plan)
    before = lan.target_vxlan_count()
    assert _ping_loss(lan) == "0"
    assert lan.target_vxlan_count() - before == 100

    # An outdated program (another version's name) is replaced in place.
    with lan.source.iproute() as ipr:
        index = ipr.link_lookup(ifname="vxtap-mk1")[0]
        fd = syscall.load_program(asm.priority_to_mark_program(), "old")
        try:
            ipr.tc(
                "replace-filter",
                "bpf",
                index,
                ":1",
                fd=fd,
                name="vxtap-mirror-0ld",
                parent=0xFFFFFFF2,
                classid=1,
                direct_action=True,
                prio=1,
            )
        finally:
            os.close(fd)
    assert any("vxtap-mirror-0ld" in p for p in lan.dataplane.drift(plan))
    lan.dataplane.apply(plan)
    before = lan.target_vxlan_count()
    assert _ping_loss(lan) == "0"
    assert lan.target_vxlan_count() - before == 100

    # The agent's process ends (or is killed): the kernel keeps mirroring on its own,
    # and a new process recognises the state without touching it.
    snapshot = _kernel_snapshot(lan)
    fresh = type(lan.dataplane)(netns=lan.source.name, encapsulation=lan.dataplane.encapsulation)
    assert fresh.drift(plan) == []
    fresh.apply(plan)
    assert _kernel_snapshot(lan) == snapshot


def test_apply_refuses_bad_plans_and_leaves_the_kernel_as_it_was(lan: Lan) -> None:
    plan = compile_plan(state([_udp_all()], [session("s", "f", 1)]))
    lan.dataplane.apply(plan)
    snapshot = _kernel_snapshot(lan)

    def bad(text: str) -> str:
        return text.replace('dup to "vxtap-mk0"', 'dup to "nope0"')

    broken = dataclasses.replace(
        plan,
        digest="0" * 32,
        chain_rules=tuple((name, bad(text)) for name, text in plan.chain_rules),
        tunnels=tuple(dataclasses.replace(t, vni=t.vni + 1) for t in plan.tunnels),
    )
    # Both ways of loading: the changed chains only, and (a new process) the whole table.
    same_path = lan.dataplane.encapsulation
    for dataplane in (lan.dataplane, Dataplane(netns=lan.source.name, encapsulation=same_path)):
        with pytest.raises(DataplaneError, match="nft refused the ruleset"):
            dataplane.apply(broken)
        assert dataplane.drift(plan) == []  # the tunnel map too is as it was
    assert _kernel_snapshot(lan) == snapshot


def test_production_mark_and_priority_leave_exactly_as_they_arrived(lan: Lan) -> None:
    # Around vxtap's chains (ingress -500, egress 500) a probe table sets marks and
    # priorities before and counts what is left after, per destination port.
    cases = {  # port: (mark, priority) the production packet carries
        0: (0, "none"),
        1: (0x1234, "none"),
        2: (0, "0:7"),
        3: (0x1234, "1:7"),
    }
    lines = ["table netdev probe {"]
    for base, hook, before, after in ((7000, "ingress", -600, -400), (8000, "egress", 0, 600)):
        for stage, prio in (("set", before), ("check", after)):
            lines.append(
                f"chain {hook}-{stage} {{ type filter hook {hook} device eth0 priority {prio}; }}"
            )
        for offset, (mark, priority) in cases.items():
            port = base + offset
            lines.append(f"counter c{port} {{}}")
            lines.append(
                f"chain {hook}-set {{ udp dport {port} meta mark set {mark} "
                f"meta priority set {priority}\n}}"
            )
            lines.append(
                f"chain {hook}-check {{ udp dport {port} meta mark {mark} "
                f'meta priority {priority} counter name "c{port}"\n}}'
            )
    lines.append("}")
    lan.source.run(["nft", "-f", "-"], input="\n".join(lines))
    lan.dataplane.apply(compile_plan(state([_udp_all()], [session("s", "f", 1)])))
    n = 20
    with lan.capture() as mirrors:
        lan.send_udp(lan.test, [(4, SOURCE_IP, 6000, 7000 + i, 10, n) for i in cases])
        lan.send_udp(lan.source, [(4, TEST_IP, 6000, 8000 + i, 10, n) for i in cases])
    probe = lan.source.run(["nft", "-j", "list", "counters", "table", "netdev", "probe"]).stdout
    seen = {
        c["counter"]["name"]: c["counter"]["packets"]
        for c in json.loads(probe)["nftables"]
        if "counter" in c
    }
    assert seen == {f"c{b + i}": n for b in (7000, 8000) for i in cases}
    mirrored = Counter(m.dport for m in mirrors)
    # Both mark and priority in use: nothing can carry the session; counted, not mirrored.
    assert mirrored == {b + i: n for b in (7000, 8000) for i in (0, 1, 2)}
    assert lan.dataplane.counters().unmirrorable["s"].packets == 2 * n


def test_prerequisites_are_met_here_and_checking_changes_nothing(
    make_namespace: Callable[[str], Namespace],
) -> None:
    ns = make_namespace("dp-pre")
    assert Dataplane(netns=ns.name).missing_prerequisites() == []
    assert ns.run(["nft", "list", "ruleset"]).stdout.strip() == ""
    assert "vxtap" not in ns.run(["ip", "link"]).stdout


def _table_content(ns: Namespace) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Chains with their rules (handles and counts stripped) and counters' comments."""
    items = json.loads(ns.run(["nft", "-j", "list", "table", "netdev", "vxtap"]).stdout)
    chains: dict[str, list[str]] = {}
    counters: dict[str, str] = {}
    for item in items["nftables"]:
        if "chain" in item:
            if not item["chain"]["name"].startswith("plan_"):  # names ifindexes: differ
                chains.setdefault(item["chain"]["name"], [])
        elif "counter" in item:
            counters[item["counter"]["name"]] = item["counter"].get("comment", "")
        elif "rule" in item:
            rule_ = item["rule"]
            chains.setdefault(rule_["chain"], []).append(json.dumps(rule_["expr"]))
    return chains, counters


def test_changes_touch_only_what_differs_and_end_like_a_full_load(
    make_namespace: Callable[[str], Namespace],
) -> None:
    ns = make_namespace("dp-incr")
    udp, tcp = Protocol.UDP, Protocol.TCP
    fa = Filter(
        id="fa",
        name="a",
        rules=(
            rule("a1", 1, protocol=udp, dports="53-53", filter_id="fa"),
            rule("a2", 2, Action.REJECT, protocol=tcp, filter_id="fa"),
            rule("a3", 3, direction=Direction.EGRESS, filter_id="fa"),
        ),
    )
    fb = Filter(id="fb", name="b", rules=(rule("b1", 1, protocol=tcp, filter_id="fb"),))
    other = SOURCE_PORT.model_copy(update={"id": "port-other", "device": "eth7"})
    before = state([fa, fb], [session("s1", "fa", 1), session("s2", "fb", 2)])
    fa2 = Filter(
        id="fa",
        name="a",
        rules=(
            rule("a1-new-id", 1, protocol=udp, dports="53-53", filter_id="fa"),  # same rule, new id
            rule("a2", 2, Action.ACCEPT, protocol=tcp, filter_id="fa"),  # action changed
        ),
    )
    after = state(
        [fa2, fb],
        [
            session("s1", "fa", 2),
            session("s2", "fb", 1),  # priorities swapped
            session("s3", "fb", 1, sources=("port-other",), vni=9),  # a new device
        ],
    ).model_copy(update={"ports": (SOURCE_PORT, other)})
    dp = Dataplane(netns=ns.name)
    dp.apply(compile_plan(before))
    untouched = ["nft", "-a", "list", "chain", "netdev", "vxtap", f"s{_key('s2'):08x}i"]
    handles = ns.run(untouched).stdout
    dp.apply(compile_plan(after))  # incremental: this object knows what the table holds
    assert ns.run(untouched).stdout == handles  # same rules, same handles: not re-added
    incremental = _table_content(ns)
    assert dp.drift(compile_plan(after)) == []
    dp.cleanup()
    Dataplane(netns=ns.name).apply(compile_plan(after))  # a full load from nothing
    full = _table_content(ns)
    assert full[1] == incremental[1]
    assert full[0].keys() == incremental[0].keys()
    for chain, rules in full[0].items():
        assert rules == incremental[0][chain], chain
    assert incremental[1][f"r{_key('s1'):08x}i1"] == "rule s1 a1-new-id"
    dp.cleanup()


def _key(session_id: str) -> int:
    return session_key(session_id, SOURCE_PORT.id)


def test_two_sources_own_outer_addresses_and_a_device_that_appears_later(lan: Lan) -> None:
    second = SOURCE_PORT.model_copy(
        update={"id": "port-source-2", "device": "eth1", "ipv4": ("192.168.0.231",), "ipv6": ()}
    )
    desired = state(
        [_udp_all()], [session("s", "f", 1, sources=(SOURCE_PORT.id, second.id))]
    ).model_copy(update={"ports": (SOURCE_PORT, second)})
    plan = compile_plan(desired)
    lan.dataplane.apply(plan)
    # eth1 appears only now: its chains bind by name and start working, no re-apply.
    veth(lan.source, "eth1", lan.switch, "p-src1")
    lan.switch.run(["ip", "link", "set", "p-src1", "master", "br0"])
    lan.source.run(["ip", "addr", "add", "192.168.0.231/24", "dev", "eth1"])
    # Each address answered on its own device only (no ARP flux between eth0 and eth1).
    lan.source.run(["sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=1"])
    lan.source.run(["sysctl", "-qw", "net.ipv4.conf.all.arp_announce=2"])
    lan.test.run(["ip", "neigh", "flush", "all"])
    assert lan.dataplane.drift(plan) == []
    with lan.capture() as mirrors:
        lan.send_udp(
            lan.test,
            [(4, SOURCE_IP, 6000, 7000, 10, 10), (4, "192.168.0.231", 6000, 7001, 10, 10)],
        )
    # Each source's mirrors leave from that source's own address.
    by_source = Counter((m.outer_src, m.dst, m.dport) for m in mirrors)
    assert by_source == {
        (SOURCE_IP, SOURCE_IP, 7000): 10,
        ("192.168.0.231", "192.168.0.231", 7001): 10,
    }


def test_apply_checks_what_it_wrote_and_reads_unchanged_devices_once(
    make_namespace: Callable[[str], Namespace], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check that ends an apply re-reads the table the transaction changed (so a
    kernel that does not show it fails the apply) but not the devices the apply listed
    moments before and left alone."""
    ns = make_namespace("dp-check")
    first = compile_plan(state([_udp_all()], [session("s", "f", 1, vni=7)]))
    second = compile_plan(state([_udp_all()], [session("s", "f", 1, vni=8)], "2"))
    dp = Dataplane(netns=ns.name)
    dp.apply(first)
    commands: list[str] = []
    run = dp.run

    def recording(
        argv: Sequence[str], stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        commands.append(" ".join(argv[:3]))
        return run(argv, stdin)

    read_table = nftables.read_table_state

    def recording_table(netns: str | None) -> TableState | None:
        commands.append("table state")
        return read_table(netns)

    monkeypatch.setattr(dp, "run", recording)
    monkeypatch.setattr(nftables, "read_table_state", recording_table)
    dp.apply(second)  # a new VNI: the tunnel map entry and the table's marker change
    assert commands.count("table state") == 2  # before and after the transaction
    assert commands.count("nft -f -") == 1
    assert commands.count("ip -d -j") == 1  # the links, listed once
    assert commands.count("tc -j filter") == 3  # each program's hook, listed once
    assert commands.count("ethtool -k vxtap-mk0") == 1
    commands.clear()
    assert dp.drift(second) == []  # a check on its own reads everything afresh
    assert commands.count("ip -d -j") == 1 and commands.count("table state") == 1

    def sabotaged(
        argv: Sequence[str], stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        out = run(argv, stdin)
        if argv[:2] == ["nft", "-f"]:  # the transaction "succeeded", the kernel lost a chain
            base = next(c.name for c in first.chains if c.hook is not None)
            assert run(["nft", "delete", "chain", "netdev", "vxtap", base]).returncode == 0
        return out

    monkeypatch.setattr(dp, "run", sabotaged)
    with pytest.raises(DataplaneError, match="differs from the plan after apply"):
        dp.apply(first)
    monkeypatch.undo()
    dp.apply(first)
    assert dp.drift(first) == []
    dp.cleanup()


def test_what_an_apply_checks_is_what_a_fresh_read_shows(
    make_namespace: Callable[[str], Namespace],
) -> None:
    """The closing check of an apply judges the snapshot it read first with what the
    writers said they changed read again. After every kind of repair that snapshot must
    equal a fresh read of the kernel: a writer that did not say what it changed would
    leave a stale part behind, which this catches."""
    ns = make_namespace("dp-snap")
    first = compile_plan(state([_udp_all()], [session("s", "f", 1, vni=7)]))
    second = compile_plan(state([_udp_all()], [session("s", "f", 1, vni=8)], "2"))
    base = next(c.name for c in first.chains if c.hook is not None)
    dp = Dataplane(netns=ns.name)
    breakages: list[tuple[KernelPlan, list[str]]] = [
        (first, []),  # everything created
        (first, ["ip", "link", "del", "vxtap-pr0"]),  # a pair re-created
        (first, ["ip", "link", "set", "vxtap-mk1", "mtu", "1500"]),
        (first, ["ip", "link", "set", "vxtap-vx0", "down"]),
        (first, ["ethtool", "-K", "vxtap-mk0", "tso", "on"]),
        (first, ["tc", "filter", "del", "dev", "vxtap-mk1", "ingress"]),
        (first, ["nft", "flush", "chain", "netdev", "vxtap", base]),
        (second, []),  # another VNI: the map and the table's marker
        (second, ["nft", "delete", "table", "netdev", "vxtap"]),
    ]
    for plan, command in breakages:
        if command:
            assert ns.run(command).returncode == 0, command
        checked = dp._apply(plan)
        assert dp._problems(plan, checked) == [], command
        assert checked == dp.read(plan), command
    dp.cleanup()
