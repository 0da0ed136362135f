"""Field types: Huawei's lenient spellings accepted, anything else refused in one line."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from vxtap import model
from vxtap.wire import fields


def refusal(annotation: Any, value: Any) -> str:
    """The message a field type gives for `value` (it must refuse it)."""
    with pytest.raises(ValidationError) as refused:
        TypeAdapter(annotation).validate_python(value)
    errors = refused.value.errors()
    assert len(errors) == 1
    return str(errors[0]["msg"])


@given(st.integers(1, 65535))
def test_a_priority_is_accepted_as_a_number_or_as_digits(number: int) -> None:
    adapter = TypeAdapter(fields.RulePriority)
    assert adapter.validate_python(number) == number
    assert adapter.validate_python(str(number)) == number
    assert adapter.validate_python(f" {number} ") == number


@pytest.mark.parametrize(
    ("annotation", "low", "high"),
    [
        (fields.RulePriority, 1, 65535),
        (fields.SessionPriority, 1, 32766),
        (fields.Vni, 0, 16_777_215),
        (fields.PacketLength, 1, 1460),
    ],
)
def test_integers_outside_their_range_are_refused_naming_it(
    annotation: Any, low: int, high: int
) -> None:
    adapter = TypeAdapter(annotation)
    assert adapter.validate_python(str(low)) == low
    assert adapter.validate_python(high) == high
    for outside in (low - 1, high + 1, str(high + 1)):
        assert f"must be {low}-{high}" in refusal(annotation, outside)


@pytest.mark.parametrize("value", [True, False, 1.0, "1.5", "-1", "0x10", "", "1e3", None, [1]])
def test_what_is_not_an_integer_is_refused(value: Any) -> None:
    assert "must be an integer 1-65535" in refusal(fields.RulePriority, value)


@given(st.booleans(), st.sampled_from([str.lower, str.upper, str.title]))
def test_booleans_arrive_as_json_or_as_text_in_any_case(flag: bool, case: Any) -> None:
    adapter = TypeAdapter(fields.FlexBool)
    assert adapter.validate_python(flag) is flag
    assert adapter.validate_python(case(str(flag))) is flag


@pytest.mark.parametrize("value", [1, 0, "yes", "1", "", None])
def test_other_booleans_are_refused(value: Any) -> None:
    assert "must be true or false" in refusal(fields.FlexBool, value)


@given(
    st.sampled_from(list(model.Protocol)),
    st.lists(st.booleans(), min_size=8, max_size=8),
)
def test_enums_are_accepted_in_any_letter_case_and_answered_canonically(
    protocol: model.Protocol, upper: list[bool]
) -> None:
    spelled = "".join(
        c.upper() if up else c.lower() for c, up in zip(protocol.value, upper, strict=False)
    )
    assert TypeAdapter(fields.ProtocolIn).validate_python(f" {spelled} ") is protocol


def test_an_unknown_enum_value_is_refused_listing_the_allowed_ones() -> None:
    message = refusal(fields.DirectionIn, "inbound")
    assert "ingress|egress" in message and "'inbound'" in message
    assert "eni" in refusal(fields.TargetTypeIn, 5)


def test_cidrs_are_normalised_and_blank_means_absent() -> None:
    adapter = TypeAdapter(fields.Cidr)
    assert adapter.validate_python(" 10.0.0.7/24 ") == "10.0.0.0/24"
    assert adapter.validate_python("2001:DB8::1/64") == "2001:db8::/64"
    assert adapter.validate_python("10.0.0.1") == "10.0.0.1/32"
    assert adapter.validate_python("  ") is None
    assert adapter.validate_python(None) is None


@pytest.mark.parametrize("value", ["10.0.0.0/33", "300.0.0.0/8", "10.0.0.0/", "any", 10, ["x"]])
def test_bad_cidrs_are_refused(value: Any) -> None:
    assert "must be a CIDR block" in refusal(fields.Cidr, value)


@given(st.integers(1, 65535), st.integers(1, 65535))
def test_port_ranges_within_1_to_65535_are_accepted_in_order(a: int, b: int) -> None:
    start, end = sorted((a, b))
    assert TypeAdapter(fields.PortRangeText).validate_python(f" {start}-{end} ") == f"{start}-{end}"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0-80", "port 0 in '0-80' is outside 1-65535"),
        ("80-65536", "port 65536 in '80-65536' is outside 1-65535"),
        ("200-80", "start 200 is greater than end 80"),
        ("80", "not a port range of the form START-END"),
        ("a-b", "not a port range of the form START-END"),
        (80, "must be a port range START-END"),
    ],
)
def test_bad_port_ranges_are_refused_saying_why(value: Any, message: str) -> None:
    assert message in refusal(fields.PortRangeText, value)


def test_blank_port_range_means_absent() -> None:
    assert TypeAdapter(fields.PortRangeText).validate_python("") is None


@pytest.mark.parametrize("value", ["a", "x" * 64, "网络-filter_1.2"])
def test_names_of_1_to_64_word_characters_are_accepted(value: str) -> None:
    assert TypeAdapter(fields.Name).validate_python(value) == value


@pytest.mark.parametrize("value", ["", "x" * 65, "a b", "a/b", "<x>", None, 5])
def test_other_names_are_refused(value: Any) -> None:
    assert "must be 1-64 characters" in refusal(fields.Name, value)


def test_descriptions_allow_255_characters_and_none_means_empty() -> None:
    adapter = TypeAdapter(fields.Description)
    assert adapter.validate_python("d" * 255) == "d" * 255
    assert adapter.validate_python(None) == ""
    for bad in ("d" * 256, "<script>", "a>b", "nul\x00", 7):
        assert "0-255 characters without '<', '>' or NUL" in refusal(fields.Description, bad)


def test_identifiers_are_1_to_64_characters_without_nul() -> None:
    adapter = TypeAdapter(fields.Identifier)
    assert adapter.validate_python("i" * 64) == "i" * 64
    for bad in ("", "i" * 65, "a\x00b", 12, None):
        assert "must be an id" in refusal(fields.Identifier, bad)


def test_sources_are_1_to_10_distinct_ids() -> None:
    adapter = TypeAdapter(fields.Sources)
    ten = [f"p{i}" for i in range(model.MAX_SOURCES_PER_SESSION)]
    assert adapter.validate_python(ten) == ten
    assert "1-10 port ids" in refusal(fields.Sources, [])
    assert "1-10 port ids" in refusal(fields.Sources, [*ten, "p10"])
    assert "1-10 port ids" in refusal(fields.Sources, "p1")
    assert "port(s) a, b more than once" in refusal(fields.Sources, ["b", "a", "b", "a", "c"])
    assert "must be an id" in refusal(fields.Sources, ["ok", ""])


def test_hosts_and_devices_are_checked_as_names_for_the_kernel() -> None:
    assert TypeAdapter(fields.Host).validate_python("node-1.example_lab") == "node-1.example_lab"
    for bad in ("", "-leading", "has space", "a/b", "h" * 256, None):
        assert "must be a host name" in refusal(fields.Host, bad)
    assert TypeAdapter(fields.Device).validate_python("vxtap-eth0.10") == "vxtap-eth0.10"
    for bad in ("", "d" * 16, "eth 0", "eth/0", "eth:0", "eth\t0", "eth\x7f", 3):
        assert "must be a Linux interface name" in refusal(fields.Device, bad)


def test_macs_are_normalised_to_lower_case_with_colons() -> None:
    adapter = TypeAdapter(fields.Mac)
    assert adapter.validate_python(" 52-54-00-AB-CD-EF ") == "52:54:00:ab:cd:ef"
    assert adapter.validate_python("") is None
    assert adapter.validate_python(None) is None
    for bad in ("52:54:00:ab:cd", "52:54:00:ab:cd:eg", "525400abcdef", 0x525400ABCDEF):
        assert "must be a MAC address" in refusal(fields.Mac, bad)


def test_addresses_keep_the_address_of_an_interface_once_each() -> None:
    four = TypeAdapter(fields.IPv4List)
    assert four.validate_python(["10.0.0.1/24", " 10.0.0.1 ", "10.0.0.2"]) == [
        "10.0.0.1",
        "10.0.0.2",
    ]
    assert four.validate_python(None) == []
    six = TypeAdapter(fields.IPv6List)
    assert six.validate_python(["2001:DB8::1/64"]) == ["2001:db8::1"]


def test_addresses_of_the_wrong_family_or_no_unicast_host_are_refused() -> None:
    assert "'2001:db8::1' is not an IPv4 address" in refusal(fields.IPv4List, ["2001:db8::1"])
    assert "'10.0.0.1' is not an IPv6 address" in refusal(fields.IPv6List, ["10.0.0.1"])
    assert "is not an IPv4 address" in refusal(fields.IPv4List, [None])
    assert "broadcast address of 10.0.0.0/24" in refusal(fields.IPv4List, ["10.0.0.255/24"])
    expected = model.interface_refusal(ipaddress.ip_interface("224.0.0.1"))
    assert expected is not None and expected in refusal(fields.IPv4List, ["224.0.0.1"])
    too_many = [f"10.0.1.{i}" for i in range(1, 66)]
    assert "at most 64 IPv4 addresses" in refusal(fields.IPv4List, too_many)
    assert "at most 64 IPv4 addresses" in refusal(fields.IPv4List, "10.0.0.1")


def test_a_refused_value_is_quoted_short_enough_for_one_line() -> None:
    message = refusal(fields.Name, "n" * 10_000)
    assert len(message) < 200 and message.endswith("...")
