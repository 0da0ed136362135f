"""Mirror filters through the official SDK against a real `vxtap server`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
from huaweicloudsdkvpc.v3 import (
    CreateTrafficMirrorFilterOption,
    CreateTrafficMirrorFilterRequest,
    CreateTrafficMirrorFilterRequestBody,
    DeleteTrafficMirrorFilterRequest,
    ListTrafficMirrorFiltersRequest,
    ShowTrafficMirrorFilterRequest,
    UpdateTrafficMirrorFilterOption,
    UpdateTrafficMirrorFilterRequest,
    UpdateTrafficMirrorFilterRequestBody,
)

from support.api import Raw, snapshot, unique, vpc_client


def create_filter(vpc: Any, name: str, description: str | None = None) -> Any:
    option = CreateTrafficMirrorFilterOption(name=name, description=description)
    request = CreateTrafficMirrorFilterRequest(CreateTrafficMirrorFilterRequestBody(option))
    return vpc.create_traffic_mirror_filter(request).traffic_mirror_filter


def test_fixture_server_serves_create_and_show(api_server: Any) -> None:
    vpc = vpc_client(api_server.endpoint, api_server.ak, api_server.sk, api_server.project_id)
    created = create_filter(vpc, "seed-filter", "inbound TCP")
    shown = vpc.show_traffic_mirror_filter(ShowTrafficMirrorFilterRequest(created.id))
    assert shown.traffic_mirror_filter.name == "seed-filter"
    assert shown.request_id


def test_filter_lifecycle(vpc: Any) -> None:
    name = unique("过滤器_a.b")
    created = create_filter(vpc, name)
    assert created.name == name
    assert created.description == ""
    assert created.ingress_rules == [] and created.egress_rules == []
    assert isinstance(created.created_at, datetime)
    assert created.project_id

    updated = vpc.update_traffic_mirror_filter(
        UpdateTrafficMirrorFilterRequest(
            created.id,
            UpdateTrafficMirrorFilterRequestBody(
                UpdateTrafficMirrorFilterOption(description="now described")
            ),
        )
    ).traffic_mirror_filter
    assert updated.name == name
    assert updated.description == "now described"

    listed = vpc.list_traffic_mirror_filters(ListTrafficMirrorFiltersRequest(name=name))
    assert [f.id for f in listed.traffic_mirror_filters] == [created.id]
    assert listed.page_info.current_count == 1
    assert listed.page_info.previous_marker == created.id
    assert listed.page_info.next_marker is None

    vpc.delete_traffic_mirror_filter(DeleteTrafficMirrorFilterRequest(created.id))
    with pytest.raises(ClientRequestException) as info:
        vpc.show_traffic_mirror_filter(ShowTrafficMirrorFilterRequest(created.id))
    assert info.value.status_code == 404
    assert info.value.error_code == "VPC.0003"


def test_pagination_walks_every_filter_once_in_creation_order(vpc: Any) -> None:
    description = unique("page")
    ids = [create_filter(vpc, f"p{i}", description).id for i in range(7)]
    seen: list[str] = []
    marker = None
    pages = 0
    while True:
        page = vpc.list_traffic_mirror_filters(
            ListTrafficMirrorFiltersRequest(description=description, limit=3, marker=marker)
        )
        seen += [f.id for f in page.traffic_mirror_filters]
        pages += 1
        assert page.page_info.current_count == len(page.traffic_mirror_filters)
        if page.page_info.next_marker is None:
            break
        assert page.page_info.next_marker == page.traffic_mirror_filters[-1].id
        marker = page.page_info.next_marker
    assert seen == ids
    assert pages == 3


BAD_FILTERS = [
    ({"name": ""}, "name"),
    ({"name": "x" * 65}, "1-64"),
    ({"name": "has space"}, "name"),
    ({"name": "semi;colon"}, "name"),
    ({"name": 5}, "name"),
    ({"name": "ok", "description": "<script>"}, "description"),
    ({"name": "ok", "description": "d" * 256}, "0-255"),
    ({"name": "ok", "unknown": 1}, "unknown"),
    ({}, "name: required"),
]


@pytest.mark.parametrize(("option", "named"), BAD_FILTERS)
def test_bad_filter_is_refused_and_changes_nothing(
    raw: Raw, server: Any, option: dict[str, Any], named: str
) -> None:
    before = snapshot(server.db_url)
    response = raw.v3("POST", "traffic-mirror-filters", {"traffic_mirror_filter": option})
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error_code"] == "VPC.0002"
    assert named in body["error_msg"]
    assert body["request_id"]
    assert snapshot(server.db_url) == before
