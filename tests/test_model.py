from __future__ import annotations

import ipaddress

import pytest
from pydantic import ValidationError

from vxtap.model import (
    Action,
    DesiredState,
    Direction,
    EtherType,
    Filter,
    PortRange,
    Protocol,
    Rule,
    Session,
    address_refusal,
    interface_refusal,
)


def rule(**overrides: object) -> Rule:
    fields: dict[str, object] = {
        "id": "r1",
        "filter_id": "f1",
        "direction": Direction.INGRESS,
        "priority": 1,
        "action": Action.ACCEPT,
        "ethertype": EtherType.IPV4,
        "protocol": Protocol.TCP,
    }
    fields.update(overrides)
    return Rule.model_validate(fields)


@pytest.mark.parametrize(
    ("text", "start", "end"), [("80-200", 80, 200), (" 1234-1234 ", 1234, 1234)]
)
def test_port_range_parses(text: str, start: int, end: int) -> None:
    parsed = PortRange.parse(text)
    assert (parsed.start, parsed.end) == (start, end)
    assert str(parsed) == f"{start}-{end}"
    assert start in parsed and end in parsed and end + 1 not in parsed


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("80", "START-END"),
        ("a-b", "START-END"),
        ("0-10", "outside 1-65535"),
        ("10-70000", "outside 1-65535"),
        ("200-80", "greater than end"),
    ],
)
def test_port_range_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PortRange.parse(text)


def test_rule_rejects_cidr_of_the_other_family() -> None:
    with pytest.raises(ValidationError, match="source_cidr_block 2001:db8::/32 is not an IPv4"):
        rule(source_cidr=ipaddress.ip_network("2001:db8::/32"))


def test_rule_rejects_ports_without_tcp_or_udp() -> None:
    with pytest.raises(ValidationError, match="only allowed with TCP or UDP"):
        rule(protocol=Protocol.ICMP, destination_ports=PortRange(start=1, end=2))


def test_rule_rejects_icmp_family_mismatch() -> None:
    with pytest.raises(ValidationError, match="ICMPV6 needs ethertype IPv6"):
        rule(protocol=Protocol.ICMPV6)


def test_filter_orders_rules_by_priority_per_direction() -> None:
    rules = (
        rule(id="b", priority=20),
        rule(id="e", priority=5, direction=Direction.EGRESS),
        rule(id="a", priority=10),
    )
    flt = Filter(id="f1", name="f", rules=rules)
    assert [r.id for r in flt.rules_for(Direction.INGRESS)] == ["a", "b"]
    assert [r.id for r in flt.rules_for(Direction.EGRESS)] == ["e"]


def test_session_defaults_and_limits() -> None:
    session = Session(id="s", name="s", filter_id="f", target_id="t", priority=1)
    assert (session.vni, session.packet_length, session.enabled) == (1, 96, True)
    with pytest.raises(ValidationError, match="vni"):
        Session(id="s", name="s", filter_id="f", target_id="t", priority=1, vni=1 << 24)


def test_desired_state_round_trips_through_json() -> None:
    state = DesiredState(
        host="h",
        revision="1",
        filters=(
            Filter(
                id="f1", name="f", rules=(rule(source_cidr=ipaddress.ip_network("10.0.0.0/8")),)
            ),
        ),
    )
    assert DesiredState.model_validate_json(state.model_dump_json()) == state


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("255.255.255.255", "the limited broadcast address"),
        ("::ffff:255.255.255.255", "the limited broadcast address"),
        ("224.0.0.5", "multicast"),
        ("239.255.255.250", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "unspecified"),
        ("::", "unspecified"),
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("not an address", "not an IP address"),
    ],
)
def test_address_refusal_names_what_cannot_be_a_port_address(address: str, kind: str) -> None:
    refusal = address_refusal(address)
    assert refusal is not None and kind in refusal
    if kind != "not an IP address":
        assert address_refusal(ipaddress.ip_address(address)) == refusal


@pytest.mark.parametrize(
    "address", ["10.0.0.1", "192.168.0.255", "100.64.0.1", "2001:db8::1", "fd00::1", "1.1.1.1"]
)
def test_unicast_addresses_are_port_addresses(address: str) -> None:
    assert address_refusal(address) is None


def test_an_address_with_its_prefix_shows_its_subnet_broadcast() -> None:
    assert "broadcast address of 10.0.0.0/24" in str(
        interface_refusal(ipaddress.ip_interface("10.0.0.255/24"))
    )
    assert "broadcast address of 10.0.0.0/23" in str(
        interface_refusal(ipaddress.ip_interface("10.0.1.255/23"))
    )
    for usable in ("10.0.0.255/23", "10.0.0.1/31", "10.0.0.255/32", "2001:db8::ffff/112"):
        assert interface_refusal(ipaddress.ip_interface(usable)) is None
    assert "loopback" in str(interface_refusal(ipaddress.ip_interface("127.0.0.1/8")))
