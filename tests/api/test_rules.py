"""Mirror filter rules through the official SDK, and bad rules field by field."""

from __future__ import annotations

from typing import Any

import pytest
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
from huaweicloudsdkvpc.v3 import (
    CreateTrafficMirrorFilterOption,
    CreateTrafficMirrorFilterRequest,
    CreateTrafficMirrorFilterRequestBody,
    CreateTrafficMirrorFilterRuleOption,
    CreateTrafficMirrorFilterRuleRequest,
    CreateTrafficMirrorFilterRuleRequestBody,
    DeleteTrafficMirrorFilterRequest,
    DeleteTrafficMirrorFilterRuleRequest,
    ListTrafficMirrorFilterRulesRequest,
    ShowTrafficMirrorFilterRequest,
    ShowTrafficMirrorFilterRuleRequest,
    UpdateTrafficMirrorFilterRuleOption,
    UpdateTrafficMirrorFilterRuleRequest,
    UpdateTrafficMirrorFilterRuleRequestBody,
)

from support.api import Raw, snapshot, unique, vpc_client


def new_filter(vpc: Any) -> str:
    option = CreateTrafficMirrorFilterOption(name=unique("rules"))
    request = CreateTrafficMirrorFilterRequest(CreateTrafficMirrorFilterRequestBody(option))
    filter_id: str = vpc.create_traffic_mirror_filter(request).traffic_mirror_filter.id
    return filter_id


def create_rule(vpc: Any, **fields: Any) -> Any:
    option = CreateTrafficMirrorFilterRuleOption(**fields)
    request = CreateTrafficMirrorFilterRuleRequest(CreateTrafficMirrorFilterRuleRequestBody(option))
    return vpc.create_traffic_mirror_filter_rule(request).traffic_mirror_filter_rule


def test_deleting_a_filter_deletes_its_rules(vpc: Any) -> None:
    """No session uses it: 204, and its rules are gone with it (issue 9, item 7)."""
    filter_id = new_filter(vpc)
    rules = [
        create_rule(
            vpc,
            traffic_mirror_filter_id=filter_id,
            direction=direction,
            protocol="ALL",
            ethertype="IPv4",
            action="accept",
            priority=priority,
        )
        for direction in ("ingress", "egress")
        for priority in (1, 2)
    ]
    vpc.delete_traffic_mirror_filter(DeleteTrafficMirrorFilterRequest(filter_id))
    for rule in rules:
        with pytest.raises(ClientRequestException) as info:
            vpc.show_traffic_mirror_filter_rule(ShowTrafficMirrorFilterRuleRequest(rule.id))
        assert info.value.status_code == 404
    listed = vpc.list_traffic_mirror_filter_rules(
        ListTrafficMirrorFilterRulesRequest(traffic_mirror_filter_id=filter_id)
    )
    assert listed.traffic_mirror_filter_rules == []


def test_rules_quota_is_configurable_and_answered_like_the_other_quotas(
    api_server_factory: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VXTAP_SERVER_MAX_RULES_PER_DIRECTION", "3")  # deploy.md#configuration
    server = api_server_factory(tmp_path)
    try:
        vpc = vpc_client(server.endpoint, server.ak, server.sk, server.project_id)
        filter_id = new_filter(vpc)
        fields = {
            "traffic_mirror_filter_id": filter_id,
            "protocol": "ALL",
            "ethertype": "IPv4",
            "action": "accept",
        }
        ingress = [create_rule(vpc, direction="ingress", priority=p, **fields) for p in (1, 2, 3)]
        before = snapshot(server.db_url)
        with pytest.raises(ClientRequestException) as info:
            create_rule(vpc, direction="ingress", priority=4, **fields)
        assert info.value.status_code == 409
        assert info.value.error_code == "VPC.2903"
        assert "has 3 ingress rules" in info.value.error_msg
        assert snapshot(server.db_url) == before
        for priority in (1, 2, 3):  # each direction has its own quota
            create_rule(vpc, direction="egress", priority=priority, **fields)
        vpc.delete_traffic_mirror_filter_rule(DeleteTrafficMirrorFilterRuleRequest(ingress[0].id))
        create_rule(vpc, direction="ingress", priority=4, **fields)
    finally:
        server.stop()


def test_rule_lifecycle_with_canonical_case_and_trimmed_cidr(vpc: Any) -> None:
    filter_id = new_filter(vpc)
    rule = create_rule(
        vpc,
        traffic_mirror_filter_id=filter_id,
        direction="ingress",
        protocol="tcp",
        ethertype="ipv4",
        action="accept",
        priority=10,
        source_cidr_block="192.168.0.0/24 ",
        destination_port_range="80-200",
    )
    assert (rule.protocol, rule.ethertype, rule.action) == ("TCP", "IPv4", "accept")
    assert rule.source_cidr_block == "192.168.0.0/24"
    assert rule.destination_port_range == "80-200"
    assert rule.destination_cidr_block is None and rule.source_port_range is None
    assert rule.description == ""

    egress = create_rule(
        vpc,
        traffic_mirror_filter_id=filter_id,
        direction="egress",
        protocol="ICMPV6",
        ethertype="IPv6",
        action="reject",
        priority=10,  # same priority, other direction: allowed
        destination_cidr_block="2001:db8::/64",
    )
    low = create_rule(
        vpc,
        traffic_mirror_filter_id=filter_id,
        direction="ingress",
        protocol="ALL",
        ethertype="IPv4",
        action="reject",
        priority=5,
    )

    shown = vpc.show_traffic_mirror_filter(ShowTrafficMirrorFilterRequest(filter_id))
    mirror_filter = shown.traffic_mirror_filter
    assert [r.id for r in mirror_filter.ingress_rules] == [low.id, rule.id]  # by priority
    assert [r.id for r in mirror_filter.egress_rules] == [egress.id]

    updated = vpc.update_traffic_mirror_filter_rule(
        UpdateTrafficMirrorFilterRuleRequest(
            rule.id,
            UpdateTrafficMirrorFilterRuleRequestBody(
                UpdateTrafficMirrorFilterRuleOption(
                    priority=20, protocol="udp", description="moved"
                )
            ),
        )
    ).traffic_mirror_filter_rule
    assert (updated.priority, updated.protocol, updated.description) == (20, "UDP", "moved")
    assert updated.destination_port_range == "80-200"  # untouched fields stay
    assert updated.direction == "ingress"

    one = vpc.show_traffic_mirror_filter_rule(ShowTrafficMirrorFilterRuleRequest(rule.id))
    assert one.traffic_mirror_filter_rule.priority == 20

    listed = vpc.list_traffic_mirror_filter_rules(
        ListTrafficMirrorFilterRulesRequest(traffic_mirror_filter_id=filter_id, direction="ingress")
    )
    assert [r.id for r in listed.traffic_mirror_filter_rules] == [rule.id, low.id]
    by_protocol = vpc.list_traffic_mirror_filter_rules(
        ListTrafficMirrorFilterRulesRequest(traffic_mirror_filter_id=filter_id, protocol="icmpv6")
    )
    assert [r.id for r in by_protocol.traffic_mirror_filter_rules] == [egress.id]
    by_priority = vpc.list_traffic_mirror_filter_rules(
        ListTrafficMirrorFilterRulesRequest(traffic_mirror_filter_id=filter_id, priority="5")
    )
    assert [r.id for r in by_priority.traffic_mirror_filter_rules] == [low.id]

    vpc.delete_traffic_mirror_filter_rule(DeleteTrafficMirrorFilterRuleRequest(low.id))
    with pytest.raises(ClientRequestException) as info:
        vpc.show_traffic_mirror_filter_rule(ShowTrafficMirrorFilterRuleRequest(low.id))
    assert info.value.status_code == 404


def test_duplicate_priority_is_a_conflict(vpc: Any, server: Any) -> None:
    filter_id = new_filter(vpc)
    fields = {
        "traffic_mirror_filter_id": filter_id,
        "direction": "ingress",
        "protocol": "TCP",
        "ethertype": "IPv4",
        "action": "accept",
        "priority": 7,
    }
    first = create_rule(vpc, **fields)
    before = snapshot(server.db_url)
    with pytest.raises(ClientRequestException) as info:
        create_rule(vpc, **fields)
    assert info.value.status_code == 409
    assert info.value.error_code == "VPC.2902"
    assert "priority 7" in info.value.error_msg and first.id in info.value.error_msg
    other = create_rule(vpc, **{**fields, "priority": 8})
    with pytest.raises(ClientRequestException) as info:
        vpc.update_traffic_mirror_filter_rule(
            UpdateTrafficMirrorFilterRuleRequest(
                other.id,
                UpdateTrafficMirrorFilterRuleRequestBody(
                    UpdateTrafficMirrorFilterRuleOption(priority=7)
                ),
            )
        )
    assert info.value.status_code == 409
    after = snapshot(server.db_url)
    assert [r for r in after["rules"] if r[0] != other.id] == before["rules"]


GOOD_RULE = {
    "direction": "ingress",
    "protocol": "TCP",
    "ethertype": "IPv4",
    "action": "accept",
    "priority": 1,
}

BAD_RULES: list[tuple[dict[str, Any], str]] = [
    ({"priority": 0}, "priority: must be 1-65535"),
    ({"priority": 65536}, "1-65535"),
    ({"priority": "high"}, "priority: must be an integer 1-65535"),
    ({"priority": True}, "priority"),
    ({"priority": 1.5}, "priority"),
    ({"direction": "sideways"}, "direction: must be one of ingress|egress"),
    ({"action": "drop"}, "action: must be one of accept|reject"),
    ({"ethertype": "IPv5"}, "ethertype: must be one of IPv4|IPv6"),
    ({"protocol": "SCTP"}, "protocol: must be one of TCP|UDP|ICMP|ICMPV6|ALL"),
    ({"source_cidr_block": "10.0.0.0/33"}, "source_cidr_block: must be a CIDR block"),
    ({"destination_cidr_block": "not-a-cidr"}, "destination_cidr_block"),
    ({"source_cidr_block": "2001:db8::/64"}, "not an IPv4 network"),
    ({"ethertype": "IPv6", "destination_cidr_block": "10.0.0.0/8"}, "not an IPv6 network"),
    ({"source_port_range": "80"}, "source_port_range"),
    ({"destination_port_range": "0-80"}, "outside 1-65535"),
    ({"destination_port_range": "80-70000"}, "outside 1-65535"),
    ({"destination_port_range": "200-80"}, "greater than end"),
    ({"protocol": "ICMP", "destination_port_range": "80-80"}, "only allowed with TCP or UDP"),
    ({"protocol": "ALL", "source_port_range": "1-2"}, "only allowed with TCP or UDP"),
    ({"protocol": "ICMP", "ethertype": "IPv6"}, "ICMP needs ethertype IPv4"),
    ({"description": "a>b"}, "description"),
    ({"traffic_mirror_filter_id": 12}, "traffic_mirror_filter_id"),
    ({"bogus": 1}, "bogus: is not a field"),
]


@pytest.mark.parametrize(("change", "named"), BAD_RULES)
def test_bad_rule_is_refused_and_changes_nothing(
    raw: Raw, vpc: Any, server: Any, change: dict[str, Any], named: str
) -> None:
    filter_id = new_filter(vpc)
    before = snapshot(server.db_url)
    option = {"traffic_mirror_filter_id": filter_id, **GOOD_RULE, **change}
    response = raw.v3("POST", "traffic-mirror-filter-rules", {"traffic_mirror_filter_rule": option})
    assert response.status_code == 400, response.text
    assert response.json()["error_code"] == "VPC.0002"
    assert named in response.json()["error_msg"]
    assert snapshot(server.db_url) == before


def test_required_fields_missing(raw: Raw, vpc: Any) -> None:
    filter_id = new_filter(vpc)
    for field in GOOD_RULE:
        option = {"traffic_mirror_filter_id": filter_id, **GOOD_RULE}
        del option[field]
        response = raw.v3(
            "POST", "traffic-mirror-filter-rules", {"traffic_mirror_filter_rule": option}
        )
        assert response.status_code == 400
        assert f"{field}: required" in response.json()["error_msg"]


def test_unknown_filter_is_404_and_fixed_fields_cannot_change(raw: Raw, vpc: Any) -> None:
    option = {"traffic_mirror_filter_id": "no-such-filter", **GOOD_RULE}
    response = raw.v3("POST", "traffic-mirror-filter-rules", {"traffic_mirror_filter_rule": option})
    assert response.status_code == 404
    assert "no-such-filter" in response.json()["error_msg"]

    filter_id = new_filter(vpc)
    rule = create_rule(vpc, traffic_mirror_filter_id=filter_id, **GOOD_RULE)
    for field, value in (("direction", "egress"), ("traffic_mirror_filter_id", filter_id)):
        response = raw.v3(
            "PUT",
            f"traffic-mirror-filter-rules/{rule.id}",
            {"traffic_mirror_filter_rule": {field: value}},
        )
        assert response.status_code == 400
        assert "fixed at creation" in response.json()["error_msg"]
    # An update that would make the rule inconsistent is refused as a whole.
    response = raw.v3(
        "PUT",
        f"traffic-mirror-filter-rules/{rule.id}",
        {"traffic_mirror_filter_rule": {"protocol": "ICMP", "source_port_range": "1-2"}},
    )
    assert response.status_code == 400
    shown = vpc.show_traffic_mirror_filter_rule(ShowTrafficMirrorFilterRuleRequest(rule.id))
    assert shown.traffic_mirror_filter_rule.protocol == "TCP"
    # Clearing a CIDR with "" is allowed.
    response = raw.v3(
        "PUT",
        f"traffic-mirror-filter-rules/{rule.id}",
        {"traffic_mirror_filter_rule": {"source_cidr_block": "10.1.0.0/16"}},
    )
    assert response.json()["traffic_mirror_filter_rule"]["source_cidr_block"] == "10.1.0.0/16"
    response = raw.v3(
        "PUT",
        f"traffic-mirror-filter-rules/{rule.id}",
        {"traffic_mirror_filter_rule": {"source_cidr_block": ""}},
    )
    assert "source_cidr_block" not in response.json()["traffic_mirror_filter_rule"]
