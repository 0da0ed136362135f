"""The elb scenario's pure checks: flows, exactly one collector, once each, shares,
and what an outage moved (vxtap.lab.flows). No root needed."""

from __future__ import annotations

import math

import pytest

from vxtap.lab import flows
from vxtap.lab.flows import CapturedPacket

A, B = "192.168.0.161", "192.168.0.230"


def packet(
    at: str, time: float, sport: int, *, back: bool = False, ip_id: int = 1
) -> CapturedPacket:
    src, dst = (A, sport), (B, 5201)
    if back:
        src, dst = dst, src
    return CapturedPacket(at, time, "TCP", src, dst, ip_id, 60, seq=ip_id, ack=0)


def test_both_directions_of_a_connection_are_one_flow() -> None:
    there, back = packet("", 0, 40000), packet("", 0, 40000, back=True)
    assert there.flow == back.flow
    assert there.identity != back.identity
    assert packet("", 0, 40001).flow != there.flow


def test_a_flow_on_two_members_is_found() -> None:
    copies = [
        packet("t1", 0, 40000),
        packet("t1", 1, 40000, back=True),
        packet("t2", 0, 40001),
        packet("t3", 1, 40001, back=True),  # the answer went elsewhere
    ]
    by_flow = flows.members_by_flow(copies)
    several = flows.flows_on_several(by_flow)
    assert list(several) == [copies[2].flow]
    assert dict(several[copies[2].flow]) == {"t2": 1, "t3": 1}


def test_delivery_finds_missing_and_doubled_copies() -> None:
    sent = [packet("", 0, 40000, ip_id=i) for i in range(3)]
    exact = flows.delivery(sent, [p.__class__(**{**p.__dict__, "at": "t1"}) for p in sent])
    assert exact.exact and exact.sent == exact.arrived == 3
    copies = [packet("t1", 0, 40000, ip_id=0), packet("t2", 0, 40000, ip_id=0)]
    result = flows.delivery(sent, copies)
    assert not result.exact
    assert sum(result.missing.values()) == 2  # ip ids 1 and 2
    assert sum(result.extra.values()) == 1  # ip id 0 twice


def test_shares_and_max_over_mean() -> None:
    assert flows.shares({"a": 1, "b": 3}) == {"a": 0.25, "b": 0.75}
    assert flows.shares({"a": 0}) == {"a": 0.0}
    assert flows.max_over_mean({"a": 10, "b": 20, "c": 30}) == pytest.approx(1.5)
    assert flows.max_over_mean({"a": 0}) == math.inf


def test_balance_bound_follows_the_binomial_spread() -> None:
    # 256 flows over 3 members: mean 85.3, sigma 7.5, so 5 sigma is 1.44 x the mean.
    assert flows.balance_bound(256, 3) == pytest.approx(1 + 5 * math.sqrt(2 / 256))
    assert flows.balance_bound(10_000, 3) < 1.08
    assert flows.balance_bound(256, 1) == 1.0
    assert flows.balance_bound(0, 3) == math.inf


def outage_copies() -> list[CapturedPacket]:
    """Flow 40000 lives on t1 throughout; flow 40001 on t2, which stops at 10, its flow
    moves to t3 at 11.5 and back once t2 is placed again after its restart at 20."""
    copies = [packet("t1", t / 2, 40000) for t in range(0, 60)]
    copies += [packet("t2", t, 40001) for t in (1, 5, 9.9, 10.5, 11.4)]
    copies += [packet("t3", t, 40001, back=True) for t in (11.5, 15, 19.9, 21)]
    copies += [packet("t2", t, 40001) for t in (23, 25)]
    return copies


def test_outage_measures_failover_and_finds_only_its_flows_moved() -> None:
    result = flows.outage(outage_copies(), "t2", stopped=10, restarted=20, settle=2.5)
    (its,) = result.its_flows
    assert its == packet("", 0, 40001).flow
    assert result.out_after == pytest.approx(1.4)
    assert result.moved_after == pytest.approx(1.5)
    assert result.failover == pytest.approx(1.5)
    assert result.moved_to == {its: "t3"}
    assert result.strays == {}
    assert result.returned == {its}
    assert result.not_returned == frozenset()


def test_outage_names_another_flow_that_moved_and_a_flow_that_did_not_return() -> None:
    copies = [*outage_copies(), packet("t3", 12, 40000)]  # t1's flow strayed
    copies = [c for c in copies if not (c.at == "t2" and c.time > 20)]
    copies.append(packet("t3", 26, 40001))
    result = flows.outage(copies, "t2", stopped=10, restarted=20, settle=2.5)
    assert result.strays == {packet("", 0, 40000).flow: ("t1", "t3")}
    assert result.returned == frozenset()
    assert result.not_returned == {packet("", 0, 40001).flow}


def test_outage_without_copies_after_the_stop_measures_nothing() -> None:
    copies = [packet("t1", 1, 40000)]
    result = flows.outage(copies, "t1", stopped=5)
    assert result.failover is None
    assert result.its_flows == {packet("", 0, 40000).flow}


def test_lost_are_the_packets_whose_copy_went_to_the_member() -> None:
    sent = [packet("", 0, 40000, ip_id=i) for i in range(3)]
    copies = [packet("t2", 0, 40000, ip_id=1), packet("t1", 0, 40000, ip_id=2)]
    assert flows.lost(sent, copies, "t2") == [sent[1]]


# tshark -T fields with FIELDS, occurrence=a, aggregator=",": a VXLAN copy carries the
# outer IPv4/UDP first, then the inner packet's.
VXLAN_TCP = "\t".join(
    [
        "1764870000.250000000",
        "192.168.0.230,192.168.0.161",
        "192.168.0.165,192.168.0.230",
        "17,6",
        "0x0000,0x1a2b",
        "110,60",
        "40000",
        "5201",
        "1000",
        "2000",
        "51234",
        "4789",
    ]
)
VXLAN_UDP = "\t".join(
    [
        "1764870000.5",
        "192.168.0.230,192.168.0.230",
        "192.168.0.165,192.168.0.161",
        "17,17",
        "0x0000,0x0003",
        "110,228",
        "",
        "",
        "",
        "",
        "51234,5202",
        "4789,40001",
    ]
)
PLAIN_TCP_SYN = "\t".join(
    ["1764870000.1", A, B, "6", "0x1a2b", "60", "40000", "5201", "1000", "", "", ""]
)


def test_parse_fields_takes_the_inner_headers_of_a_copy() -> None:
    tcp, udp = flows.parse_fields(f"{VXLAN_TCP}\n{VXLAN_UDP}\n", "t2", encapsulated=True)
    assert tcp == CapturedPacket(
        "t2", 1764870000.25, "TCP", (A, 40000), (B, 5201), 0x1A2B, 60, 1000, 2000
    )
    assert udp == CapturedPacket("t2", 1764870000.5, "UDP", (B, 5202), (A, 40001), 3, 228)


def test_parse_fields_reads_a_plain_packet_and_a_syn_without_ack() -> None:
    (syn,) = flows.parse_fields(PLAIN_TCP_SYN + "\n\n", "", encapsulated=False)
    assert syn == CapturedPacket(
        "", 1764870000.1, "TCP", (A, 40000), (B, 5201), 0x1A2B, 60, 1000, 0
    )


def test_parse_fields_skips_what_is_not_tcp_or_udp() -> None:
    icmp = "\t".join(["1.0", "192.168.0.230,1.1.1.1", "x,y", "17,1", "0,0", "1,1", *[""] * 6])
    assert flows.parse_fields(icmp, "t1", encapsulated=True) == []


def spread_copies(
    members: tuple[str, ...], flow_count: int
) -> tuple[list[CapturedPacket], list[CapturedPacket]]:
    """`flow_count` flows of two packets (one each way), flow i on member i % n."""
    sent: list[CapturedPacket] = []
    copies: list[CapturedPacket] = []
    for i in range(flow_count):
        for back in (False, True):
            p = packet("", float(i), 40000 + i, back=back, ip_id=i)
            sent.append(p)
            copies.append(CapturedPacket(**{**p.__dict__, "at": members[i % len(members)]}))
    return sent, copies


MEMBERS = ("t1", "t2", "t3")


def test_group_findings_pass_for_an_even_exact_placement() -> None:
    sent, copies = spread_copies(MEMBERS, 30)
    counted = {m: 20 for m in MEMBERS}
    findings = flows.group_findings(
        sent, copies, MEMBERS, flows_expected=30, counted=counted, stored=counted
    )
    assert all(f.ok for f in findings), [str(f) for f in findings if not f.ok]
    assert any("t1 10 flows (33%), 20 copies (33%)" in f.detail for f in findings)


def test_group_findings_name_a_split_flow_a_double_copy_and_a_wrong_counter() -> None:
    sent, copies = spread_copies(MEMBERS, 30)
    split = CapturedPacket(**{**copies[1].__dict__, "at": "t2"})  # flow 0's answer went to t2
    copies = [copies[0], split, *copies[2:], copies[4]]  # and a copy of flow 2 twice
    counted = {"t1": 20, "t2": 20, "t3": 20}
    findings = flows.group_findings(
        sent, copies, MEMBERS, flows_expected=30, counted=counted, stored={}
    )
    failures = {f.what: f.detail for f in findings if not f.ok}
    assert (
        "on several: 1, e.g. TCP"
        in failures["every flow's packets, both directions, reached exactly one member"]
    )
    assert failures["every packet of those flows was mirrored once, to one member"] == (
        "0 sent without a copy, 1 copies too many (of 60 sent)"
    )
    assert failures["vxtap session stats counts for t1 the copies that arrived there"] == (
        "counted 20, arrived 19"
    )


def test_group_findings_fail_when_a_member_gets_no_flow() -> None:
    sent, copies = spread_copies(("t1", "t2"), 30)
    findings = flows.group_findings(
        sent, copies, MEMBERS, flows_expected=30, counted=None, stored={}
    )
    (spread,) = [f for f in findings if f.what.startswith("the load is spread")]
    assert not spread.ok
    assert "t3 0 flows" in spread.detail


def test_group_findings_judge_an_outage() -> None:
    copies = outage_copies()
    sent = [CapturedPacket(**{**c.__dict__, "at": ""}) for c in copies]
    down = flows.OutageTimes("t2", stopped=10, restarted=20, placed_again=22.5)
    counted = {"t1": 60, "t2": 7, "t3": 4}
    findings = flows.group_findings(
        sent, copies, MEMBERS, flows_expected=1, counted=counted, stored={}, down=down
    )
    by_what = {f.what: f for f in findings}
    failover = by_what["t2 was out of the placement within 3 s of its collector's stop"]
    assert failover.ok and failover.detail.startswith("failover 1.50 s")
    assert by_what["no other flow changed member"].ok
    assert by_what["after t2's collector was back, its flows returned to it"].ok
    lost = by_what["nothing was lost beyond the failover window"]
    assert lost.ok and lost.detail.startswith("2 copies went to t2 while its collector")


def test_capture_drops_reads_tcpdumps_summary() -> None:
    log = (
        "tcpdump: listening on eth0, link-type EN10MB (Ethernet), snapshot length 262144 bytes\n"
        "11368 packets captured\n11368 packets received by filter\n7 packets dropped by kernel\n"
    )
    assert flows.capture_drops(log) == 7
    assert flows.capture_drops("tcpdump: listening on eth0\n") is None


def test_group_findings_fail_for_flows_that_reached_no_member() -> None:
    sent, _ = spread_copies(MEMBERS, 30)
    findings = flows.group_findings(sent, [], MEMBERS, flows_expected=30, counted=None, stored={})
    (one,) = [f for f in findings if f.what.startswith("every flow's packets")]
    assert not one.ok
    assert one.detail.startswith("on none: 30, e.g. TCP")
