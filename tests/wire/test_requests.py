"""Request bodies: what each operation accepts, its defaults, and what it refuses."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from vxtap import model
from vxtap.wire import requests
from vxtap.wire.fields import SourceType, TargetType

ENVELOPES: list[type[BaseModel]] = [
    cls
    for cls in vars(requests).values()
    if isinstance(cls, type) and issubclass(cls, requests.RequestBody)
]


def refused(body_type: type[BaseModel], body: Any) -> list[tuple[tuple[str | int, ...], str]]:
    """(location, error type) of each refusal of `body`."""
    with pytest.raises(ValidationError) as refusal:
        body_type.model_validate(body)
    return [(tuple(e["loc"]), e["type"]) for e in refusal.value.errors()]


def test_every_body_refuses_unknown_fields() -> None:
    assert len(ENVELOPES) >= 20
    for body_type in ENVELOPES:
        assert body_type.model_config.get("extra") == "forbid", body_type.__name__


def test_an_unknown_field_is_refused_at_its_own_path() -> None:
    body = {"traffic_mirror_filter": {"name": "f", "colour": "red"}, "extra": 1}
    assert sorted(refused(requests.CreateFilterRequest, body)) == [
        (("extra",), "extra_forbidden"),
        (("traffic_mirror_filter", "colour"), "extra_forbidden"),
    ]


def test_a_missing_envelope_is_refused() -> None:
    assert refused(requests.CreateFilterRequest, {"name": "f"}) == [
        (("traffic_mirror_filter",), "missing"),
        (("name",), "extra_forbidden"),
    ]


def test_a_filter_takes_a_name_and_an_optional_description() -> None:
    body = requests.CreateFilterRequest.model_validate({"traffic_mirror_filter": {"name": "f"}})
    assert body.traffic_mirror_filter.description == ""
    update = requests.UpdateFilterRequest.model_validate({"traffic_mirror_filter": {}})
    assert update.traffic_mirror_filter.model_fields_set == set()


def test_a_rule_is_parsed_leniently_and_its_cidrs_and_ports_default_to_absent() -> None:
    body = requests.CreateRuleRequest.model_validate(
        {
            "traffic_mirror_filter_rule": {
                "traffic_mirror_filter_id": "f1",
                "direction": "INGRESS",
                "priority": "10",
                "action": "Accept",
                "ethertype": "ipv4",
                "protocol": "TCP",
                "destination_port_range": "80-80",
            }
        }
    )
    rule = body.traffic_mirror_filter_rule
    assert (rule.direction, rule.priority, rule.action) == (
        model.Direction.INGRESS,
        10,
        model.Action.ACCEPT,
    )
    assert (rule.ethertype, rule.protocol) == (model.EtherType.IPV4, model.Protocol.TCP)
    assert rule.source_cidr_block is None and rule.source_port_range is None
    assert rule.destination_port_range == "80-80"
    assert rule.description == ""


def test_a_rule_needs_its_filter_direction_priority_action_ethertype_and_protocol() -> None:
    missing = {loc[-1] for loc, kind in refused(requests.CreateRuleRequest, {
        "traffic_mirror_filter_rule": {}}) if kind == "missing"}  # fmt: skip
    assert missing == {
        "traffic_mirror_filter_id",
        "direction",
        "priority",
        "action",
        "ethertype",
        "protocol",
    }


@pytest.mark.parametrize(
    ("envelope", "field", "value"),
    [
        ("traffic_mirror_filter_rule", "traffic_mirror_filter_id", "f2"),
        ("traffic_mirror_filter_rule", "direction", "egress"),
        ("traffic_mirror_session", "traffic_mirror_sources", ["p1"]),
    ],
)
def test_fields_fixed_at_creation_are_refused_on_update_with_a_reason(
    envelope: str, field: str, value: Any
) -> None:
    body_type = {
        "traffic_mirror_filter_rule": requests.UpdateRuleRequest,
        "traffic_mirror_session": requests.UpdateSessionRequest,
    }[envelope]
    assert refused(body_type, {envelope: {field: value}}) == [
        ((envelope, field), "extra_forbidden")
    ]
    # The API turns exactly this location into its hint (`vxtap.api.errors`).
    assert "fixed at creation" in requests.FIXED_FIELDS[(envelope, field)] or (
        "add-sources" in requests.FIXED_FIELDS[(envelope, field)]
    )


def test_every_fixed_field_hint_names_a_field_the_create_body_has() -> None:
    creates = {
        "traffic_mirror_filter_rule": requests.CreateRuleOption,
        "traffic_mirror_session": requests.CreateSessionOption,
    }
    updates = {
        "traffic_mirror_filter_rule": requests.UpdateRuleOption,
        "traffic_mirror_session": requests.UpdateSessionOption,
    }
    for envelope, field in requests.FIXED_FIELDS:
        assert field in creates[envelope].model_fields
        assert field not in updates[envelope].model_fields


SESSION = {
    "name": "s",
    "traffic_mirror_filter_id": "f1",
    "traffic_mirror_sources": ["p1", "p2"],
    "traffic_mirror_target_id": "t1",
    "traffic_mirror_target_type": "ENI",
    "priority": "5",
}


def test_a_session_gets_huaweis_defaults() -> None:
    session = requests.CreateSessionRequest.model_validate(
        {"traffic_mirror_session": SESSION}
    ).traffic_mirror_session
    assert session.virtual_network_id == model.DEFAULT_VNI == 1
    assert session.packet_length == model.DEFAULT_PACKET_LENGTH == 96
    assert session.enabled is True
    assert session.type is SourceType.ENI
    assert session.traffic_mirror_target_type is TargetType.ENI
    assert session.priority == 5 and session.description == ""


def test_session_numbers_and_booleans_may_be_strings_as_the_sdk_sends_them() -> None:
    body = {**SESSION, "virtual_network_id": "16777215", "packet_length": "1460",
            "enabled": "FALSE"}  # fmt: skip
    session = requests.CreateSessionRequest.model_validate(
        {"traffic_mirror_session": body}
    ).traffic_mirror_session
    assert (session.virtual_network_id, session.packet_length, session.enabled) == (
        16_777_215,
        1460,
        False,
    )


def test_a_bad_session_field_is_refused_at_its_path() -> None:
    body = {**SESSION, "virtual_network_id": 16_777_216, "enabled": "yes"}
    assert sorted(refused(requests.CreateSessionRequest, {"traffic_mirror_session": body})) == [
        (("traffic_mirror_session", "enabled"), "value_error"),
        (("traffic_mirror_session", "virtual_network_id"), "value_error"),
    ]


def test_sources_requests_carry_only_sources() -> None:
    body = {"traffic_mirror_session": {"traffic_mirror_sources": ["p1"]}}
    assert requests.SourcesRequest.model_validate(
        body
    ).traffic_mirror_session.traffic_mirror_sources == ["p1"]
    assert refused(
        requests.SourcesRequest,
        {"traffic_mirror_session": {"traffic_mirror_sources": ["p1"], "name": "x"}},
    ) == [(("traffic_mirror_session", "name"), "extra_forbidden")]


def test_ports_default_to_no_mac_and_no_addresses() -> None:
    port = requests.CreatePortRequest.model_validate(
        {"port": {"host": "h1", "device": "eth0"}}
    ).port
    assert (port.mac, port.ipv4, port.ipv6) == (None, [], [])
    assert refused(requests.RegisterPortsRequest, {"ports": [{"device": "eth0"}] * 1025}) == [
        (("ports",), "too_long")
    ]


def test_counters_and_host_status_refuse_nul_and_overlong_values() -> None:
    assert requests.CountersRequest.model_validate({}).sessions == {}
    long_key = "k" * 37
    assert refused(requests.CountersRequest, {"rules": {long_key: {}}})[0][:1] == (
        ("rules", long_key, "[key]"),
    )
    status = requests.HostStatusRequest.model_validate({"agent_version": "1.0"})
    assert (status.applied_revision, status.apply_error, status.drift_repairs) == (None, None, 0)
    assert refused(requests.HostStatusRequest, {"agent_version": "a\x00"}) == [
        (("agent_version",), "string_pattern_mismatch")
    ]
    assert refused(
        requests.HostStatusRequest, {"agent_version": "1", "applied_revision": "r r"}
    ) == [(("applied_revision",), "string_pattern_mismatch")]
