"""What the SDK would never send: malformed bodies, unsigned and mis-signed requests,
requests for another project. Each gets a Huawei error body and changes nothing."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
from huaweicloudsdkvpc.v3 import ListTrafficMirrorFiltersRequest, ShowTrafficMirrorFilterRequest

from support.api import Raw, make_port, snapshot, vpc_client
from vxtap.auth import sign

FILTERS = "traffic-mirror-filters"

MALFORMED: list[tuple[bytes, str]] = [
    (b"{not json", "not valid JSON"),
    (b"", "not valid JSON"),
    (b"[]", "must be a JSON object"),
    (b'"text"', "must be a JSON object"),
    (b"{}", "the body must be a JSON object {'traffic_mirror_filter'"),
    (b'{"name": "flat"}', "traffic_mirror_filter"),
    (b'{"traffic_mirror_filter": "x"}', "traffic_mirror_filter: must be a JSON object"),
    (b'{"traffic_mirror_filter": {"name": null}}', "name"),
    (
        json.dumps(
            {"traffic_mirror_filter": {"name": "a", "description": "x" * 2_000_000}}
        ).encode(),
        "larger than",
    ),
]


@pytest.mark.parametrize(("body", "named"), MALFORMED)
def test_malformed_bodies_get_400_never_422(raw: Raw, server: Any, body: bytes, named: str) -> None:
    before = snapshot(server.db_url)
    response = raw.v3("POST", FILTERS, body)
    assert response.status_code == 400, response.text
    answer = response.json()
    assert set(answer) == {"request_id", "error_msg", "error_code"}
    assert answer["error_code"] == "VPC.0002"
    assert named in answer["error_msg"]
    assert snapshot(server.db_url) == before


def test_bad_list_queries(raw: Raw) -> None:
    for query, named in [
        ("limit=2001", "limit"),
        ("limit=-1", "limit"),
        ("limit=ten", "limit"),
    ]:
        response = raw.v3("GET", f"{FILTERS}?{query}")
        assert response.status_code == 400, response.text
        assert named in response.json()["error_msg"]
    for query, named in [("priority=0", "priority"), ("enabled=maybe", "enabled")]:
        response = raw.v3("GET", f"traffic-mirror-sessions?{query}")
        assert response.status_code == 400
        assert named in response.json()["error_msg"]
    response = raw.v3("GET", "traffic-mirror-filter-rules?source_cidr_block=nonsense")
    assert response.status_code == 400


def test_unknown_route_and_method(raw: Raw) -> None:
    response = raw.v3("GET", "traffic-mirror-nothing")
    assert response.status_code == 404
    assert response.json()["error_code"] == "VPC.0003"
    response = raw.v3("PATCH", FILTERS)
    assert response.status_code == 405
    assert "error_msg" in response.json()


def test_unsigned_request_is_401(server: Any) -> None:
    response = httpx.get(f"{server.endpoint}/v3/{server.project_id}/vpc/{FILTERS}")
    assert response.status_code == 401
    assert response.json()["error_code"] == "VPC.0008"
    assert "Authorization" in response.json()["error_msg"]


def test_wrong_secret_key_is_401(server: Any) -> None:
    vpc = vpc_client(server.endpoint, server.ak, "wrong-secret", server.project_id)
    with pytest.raises(ClientRequestException) as info:
        vpc.list_traffic_mirror_filters(ListTrafficMirrorFiltersRequest())
    assert info.value.status_code == 401
    assert "signature does not match" in info.value.error_msg


def test_unknown_access_key_is_401(server: Any) -> None:
    vpc = vpc_client(server.endpoint, "AKNOBODY", server.sk, server.project_id)
    with pytest.raises(ClientRequestException) as info:
        vpc.list_traffic_mirror_filters(ListTrafficMirrorFiltersRequest())
    assert info.value.status_code == 401


def signed_create(
    server: Any, body: bytes, now: datetime | None = None
) -> tuple[str, dict[str, str]]:
    url = f"{server.endpoint}/v3/{server.project_id}/vpc/{FILTERS}"
    headers = {"Content-Type": "application/json"}
    headers.update(
        sign("POST", url, headers, body, server.ak, server.sk, server.project_id, now=now)
    )
    return url, headers


def test_tampered_body_is_401_and_changes_nothing(server: Any) -> None:
    body = json.dumps({"traffic_mirror_filter": {"name": "honest"}}).encode()
    url, headers = signed_create(server, body)
    before = snapshot(server.db_url)
    tampered = body.replace(b"honest", b"forged")
    response = httpx.post(url, content=tampered, headers=headers)
    assert response.status_code == 401
    assert "signature does not match" in response.json()["error_msg"]
    # A tampered query string is caught too.
    response = httpx.post(url + "?x=1", content=body, headers=headers)
    assert response.status_code == 401
    assert snapshot(server.db_url) == before
    assert httpx.post(url, content=body, headers=headers).status_code == 201


@pytest.mark.parametrize("name", ["Authorization", "X-Sdk-Date", "X-Project-Id"])
@pytest.mark.parametrize("same_value", [True, False])
def test_repeated_signature_headers_are_401(server: Any, name: str, same_value: bool) -> None:
    """With two, the signature would be checked on one while a proxy may act on the other."""
    body = json.dumps({"traffic_mirror_filter": {"name": "twice"}}).encode()
    url, headers = signed_create(server, body)
    _, other = signed_create(server, body, datetime.now(UTC) - timedelta(minutes=1))
    duplicate = headers[name] if same_value else other[name]
    if name == "X-Project-Id" and not same_value:
        duplicate = server.other_project_id
    before = snapshot(server.db_url)
    for pairs in (
        [*headers.items(), (name, duplicate)],
        [(name, duplicate), *headers.items()],
        [*headers.items(), (name.lower(), duplicate)],
    ):
        response = httpx.post(url, content=body, headers=pairs)
        assert response.status_code == 401, response.text
        assert response.json()["error_code"] == "VPC.0008"
        assert f"the {name.lower()} header appears more than once" in response.json()["error_msg"]
    assert snapshot(server.db_url) == before
    assert httpx.post(url, content=body, headers=headers).status_code == 201


def test_stale_date_is_401(server: Any) -> None:
    body = json.dumps({"traffic_mirror_filter": {"name": "late"}}).encode()
    for skew in (timedelta(minutes=-16), timedelta(minutes=16)):
        url, headers = signed_create(server, body, datetime.now(UTC) + skew)
        response = httpx.post(url, content=body, headers=headers)
        assert response.status_code == 401
        assert "15 minutes" in response.json()["error_msg"]


def test_another_projects_path_is_403(server: Any) -> None:
    # A valid key of project A, used on project B's URL.
    raw = Raw(server)
    response = raw.request("GET", f"/v3/{server.other_project_id}/vpc/{FILTERS}")
    assert response.status_code == 403
    assert response.json()["error_code"] == "VPC.0007"
    # The SDK with a mismatched project header: also refused.
    vpc = vpc_client(server.endpoint, server.ak, server.sk, server.other_project_id)
    with pytest.raises(ClientRequestException) as info:
        vpc.list_traffic_mirror_filters(ListTrafficMirrorFiltersRequest())
    assert info.value.status_code == 403


def test_another_projects_resources_are_invisible(server: Any, raw: Raw) -> None:
    mine = raw.v3("POST", FILTERS, {"traffic_mirror_filter": {"name": "mine"}}).json()
    filter_id = mine["traffic_mirror_filter"]["id"]
    port = make_port(raw)
    other = vpc_client(server.endpoint, server.other_ak, server.other_sk, server.other_project_id)
    with pytest.raises(ClientRequestException) as info:
        other.show_traffic_mirror_filter(ShowTrafficMirrorFilterRequest(filter_id))
    assert info.value.status_code == 404
    listed = other.list_traffic_mirror_filters(ListTrafficMirrorFiltersRequest())
    assert filter_id not in [f.id for f in listed.traffic_mirror_filters]
    # Nor can the other project reference them from its own resources.
    theirs = Raw(server)
    response = theirs.request(
        "POST",
        f"/v3/{server.other_project_id}/vpc/traffic-mirror-filter-rules",
        {
            "traffic_mirror_filter_rule": {
                "traffic_mirror_filter_id": filter_id,
                "direction": "ingress",
                "protocol": "TCP",
                "ethertype": "IPv4",
                "action": "accept",
                "priority": 1,
            }
        },
        ak=server.other_ak,
        sk=server.other_sk,
        project_id=server.other_project_id,
    )
    assert response.status_code == 404
    response = theirs.request(
        "GET",
        f"/v1/{server.other_project_id}/ports/{port['id']}",
        ak=server.other_ak,
        sk=server.other_sk,
        project_id=server.other_project_id,
    )
    assert response.status_code == 404


def test_health_and_openapi_need_no_signature(server: Any) -> None:
    assert httpx.get(f"{server.endpoint}/healthz").json() == {"status": "ok"}
    schema = httpx.get(f"{server.endpoint}/openapi.json").json()
    operations = {op["summary"] for path in schema["paths"].values() for op in path.values()}
    assert {
        "CreateTrafficMirrorFilter",
        "ListTrafficMirrorFilters",
        "ShowTrafficMirrorFilter",
        "UpdateTrafficMirrorFilter",
        "DeleteTrafficMirrorFilter",
        "CreateTrafficMirrorFilterRule",
        "ListTrafficMirrorFilterRules",
        "ShowTrafficMirrorFilterRule",
        "UpdateTrafficMirrorFilterRule",
        "DeleteTrafficMirrorFilterRule",
        "CreateTrafficMirrorSession",
        "ListTrafficMirrorSessions",
        "ShowTrafficMirrorSession",
        "UpdateTrafficMirrorSession",
        "DeleteTrafficMirrorSession",
        "AddSourcesToTrafficMirrorSession",
        "RemoveSourcesFromTrafficMirrorSession",
    } <= operations
    create = schema["paths"]["/v3/{project_id}/vpc/traffic-mirror-sessions"]["post"]
    ref = create["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    body = schema["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert "traffic_mirror_session" in body["properties"]
    # FastAPI's 422 is never answered, so it is not documented either.
    assert all("422" not in op["responses"] for p in schema["paths"].values() for op in p.values())
