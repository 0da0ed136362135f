"""List queries: each key parsed by its resource's parser; a bad value named in one line."""

from __future__ import annotations

from datetime import datetime

import pytest

from vxtap import model
from vxtap.wire.query import PORT_QUERY, RULE_QUERY, SESSION_QUERY, QueryError, parse_query


def test_a_repeated_key_means_any_of_its_values_and_unknown_keys_are_ignored() -> None:
    pairs = [("direction", "INGRESS"), ("direction", "egress"), ("colour", "red"),
             ("limit", "5"), ("marker", "m1")]  # fmt: skip
    where, limit, marker = parse_query(pairs, RULE_QUERY)
    assert where == {"direction": [model.Direction.INGRESS, model.Direction.EGRESS]}
    assert (limit, marker) == (5, "m1")


def test_values_are_parsed_as_the_body_parses_them() -> None:
    where, _, _ = parse_query(
        [("source_cidr_block", " 10.0.0.7/24 "), ("priority", "7")], RULE_QUERY
    )
    assert where == {"source_cidr": ["10.0.0.0/24"], "priority": [7]}
    where, _, _ = parse_query(
        [("enabled", "TRUE"), ("created_at", "2024-09-10T09:54:28Z")], SESSION_QUERY
    )
    assert where == {"enabled": [True], "created_at": [datetime(2024, 9, 10, 9, 54, 28)]}


def test_filters_come_back_under_the_domains_names() -> None:
    pairs = [("traffic_mirror_target_id", "t"), ("virtual_network_id", "7"), ("type", "eni")]
    where, _, _ = parse_query(pairs, SESSION_QUERY)
    assert where == {"target_id": ["t"], "vni": [7], "source_kind": ["eni"]}
    pairs = [("name", "eth0"), ("binding:host_id", "h1"), ("mac_address", "fa:16:3e:00:00:01")]
    where, _, _ = parse_query(pairs, PORT_QUERY)
    assert where == {"device": ["eth0"], "host": ["h1"], "mac": ["fa:16:3e:00:00:01"]}


def test_an_empty_marker_is_no_marker_and_no_limit_is_none() -> None:
    assert parse_query([("marker", "")], PORT_QUERY) == ({}, None, None)


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        ([("limit", "2001")], "query parameter limit: must be 0-2000, got 2001"),
        ([("priority", "x")], "query parameter priority: must be an integer 1-65535"),
        ([("source_cidr_block", "")], "query parameter source_cidr_block: must not be empty"),
        ([("id", "a\x00b")], "query parameter id: must not contain NUL"),
        ([("created_at", "yesterday")], "query parameter created_at: must be a UTC time"),
    ],
)
def test_a_bad_value_is_refused_naming_the_parameter(
    pairs: list[tuple[str, str]], message: str
) -> None:
    with pytest.raises(QueryError) as refused:
        parse_query(pairs, {**RULE_QUERY, "created_at": SESSION_QUERY["created_at"]})
    assert str(refused.value).startswith(message)
