"""Answer shapes: what the server renders has exactly the keys the shapes declare."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

import pytest
from pydantic import TypeAdapter

from vxtap.api import render
from vxtap.store.schema import FilterRow, PortRow, RuleRow
from vxtap.wire import answers

WHEN = datetime(2024, 9, 10, 9, 54, 28)


def declared(shape: Any) -> tuple[set[str], set[str]]:
    """(required, all) keys of a shape as pydantic reads it for the OpenAPI document.

    Not `__required_keys__`: with postponed annotations the runtime cannot see
    `NotRequired` and calls every key required.
    """
    schema = TypeAdapter(shape).json_schema()
    return set(schema.get("required", [])), set(schema["properties"])


def keys_fit(shape: Any, rendered: dict[str, Any]) -> None:
    """Every required key is there, and nothing the shape does not declare."""
    required, every = declared(shape)
    assert required <= rendered.keys() <= every, shape.__name__


def rule_row(**cidrs_and_ports: str | None) -> RuleRow:
    values: dict[str, Any] = {
        "source_cidr_block": None,
        "destination_cidr_block": None,
        "source_port_range": None,
        "destination_port_range": None,
        **cidrs_and_ports,
    }
    return RuleRow(id="r1", project_id="p", filter_id="f1", direction="ingress", priority=1,
                   action="accept", ethertype="IPv4", protocol="tcp", description="",
                   created_at=WHEN, updated_at=WHEN, **values)  # fmt: skip


@pytest.mark.parametrize(
    "optional",
    [
        {},
        {
            "source_cidr_block": "10.0.0.0/24",
            "destination_cidr_block": "10.0.1.0/24",
            "source_port_range": "1-2",
            "destination_port_range": "80-80",
        },
    ],
)
def test_a_rendered_rule_fits_rule_out(optional: dict[str, str]) -> None:
    rendered = render.rule_json(rule_row(**optional))
    keys_fit(answers.RuleOut, rendered)
    required, every = declared(answers.RuleOut)
    assert every - required == {
        "source_cidr_block",
        "destination_cidr_block",
        "source_port_range",
        "destination_port_range",
    }
    assert rendered["created_at"] == "2024-09-10T09:54:28Z"


def test_a_rendered_filter_fits_filter_out() -> None:
    row = FilterRow(id="f1", project_id="p", name="f", description="", created_at=WHEN,
                    updated_at=WHEN)  # fmt: skip
    row.rules = [rule_row()]
    rendered = render.filter_json(row)
    keys_fit(answers.FilterOut, rendered)
    for rule in rendered["ingress_rules"]:
        keys_fit(answers.RuleOut, rule)


def test_a_rendered_session_fits_session_out() -> None:
    row = ("s1", "p", "s", "", "f1", "t1", "eni", 1, 96, 5, True, "eni", WHEN, WHEN)
    keys_fit(answers.SessionOut, render.session_json(row, ["p1"]))


def test_rendered_ports_fit_both_port_shapes() -> None:
    row = PortRow(id="port1", project_id="p", host="h", device="eth0", mac=None,
                  ipv4=["10.0.0.1"], ipv6=[], created_at=WHEN, updated_at=WHEN)  # fmt: skip
    keys_fit(answers.PortOut, render.port_json(row))
    v1 = render.v1_port_json(row)
    keys_fit(answers.PortV1Out, v1)
    assert "binding:host_id" in declared(answers.PortV1Out)[0]
    for fixed_ip in v1["fixed_ips"]:
        keys_fit(answers.FixedIpOut, fixed_ip)


def test_page_info_markers_are_optional_and_the_count_is_not() -> None:
    assert declared(answers.PageInfo) == (
        {"current_count"},
        {"current_count", "previous_marker", "next_marker"},
    )
    for listing, items in [
        (answers.FilterListAnswer, "traffic_mirror_filters"),
        (answers.RuleListAnswer, "traffic_mirror_filter_rules"),
        (answers.SessionListAnswer, "traffic_mirror_sessions"),
    ]:
        assert declared(listing)[0] == {"request_id", items, "page_info"}


def test_a_page_is_an_immutable_value_and_the_last_one_has_no_next_marker() -> None:
    last = answers.Page(items=[1, 2], previous_marker="m0", next_marker=None, current_count=2)
    assert last == answers.Page([1, 2], "m0", None, 2)
    assert last.next_marker is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        last.next_marker = "m2"  # type: ignore[misc]
