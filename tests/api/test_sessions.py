"""Mirror sessions through the official SDK: all session operations, defaults, the
uniqueness and quota rules (docs/behaviour.md §1.6), and bad sessions field by field."""

from __future__ import annotations

from typing import Any

import pytest
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
from huaweicloudsdkvpc.v3 import (
    AddSourcesToTrafficMirrorSessionRequest,
    AddSourcesToTrafficMirrorSessionRequestBody,
    CreateTrafficMirrorFilterOption,
    CreateTrafficMirrorFilterRequest,
    CreateTrafficMirrorFilterRequestBody,
    CreateTrafficMirrorSessionOption,
    CreateTrafficMirrorSessionRequest,
    CreateTrafficMirrorSessionRequestBody,
    DeleteTrafficMirrorFilterRequest,
    DeleteTrafficMirrorSessionRequest,
    ListTrafficMirrorSessionsRequest,
    RemoveSourcesFromTrafficMirrorSessionRequest,
    RemoveSourcesFromTrafficMirrorSessionRequestBody,
    ShowTrafficMirrorSessionRequest,
    TrafficMirrorSourcesOption,
    UpdateTrafficMirrorSessionOption,
    UpdateTrafficMirrorSessionRequest,
    UpdateTrafficMirrorSessionRequestBody,
)

from support.api import Raw, make_port, snapshot, unique


def new_filter(vpc: Any) -> str:
    option = CreateTrafficMirrorFilterOption(name=unique("sess"))
    request = CreateTrafficMirrorFilterRequest(CreateTrafficMirrorFilterRequestBody(option))
    filter_id: str = vpc.create_traffic_mirror_filter(request).traffic_mirror_filter.id
    return filter_id


def create_session(vpc: Any, **fields: Any) -> Any:
    fields.setdefault("name", unique("s"))
    fields.setdefault("traffic_mirror_target_type", "eni")
    option = CreateTrafficMirrorSessionOption(**fields)
    request = CreateTrafficMirrorSessionRequest(CreateTrafficMirrorSessionRequestBody(option))
    return vpc.create_traffic_mirror_session(request).traffic_mirror_session


def sources_body(ids: list[str]) -> Any:
    return TrafficMirrorSourcesOption(traffic_mirror_sources=ids)


@pytest.fixture
def world(vpc: Any, raw: Raw) -> dict[str, Any]:
    """A filter, a target port and five source ports on one host."""
    host = unique("h")
    return {
        "filter": new_filter(vpc),
        "target": make_port(raw, unique("capture"), "10.0.9.9")["id"],
        "sources": [make_port(raw, f"{host}-{i}", f"10.0.0.{i + 1}")["id"] for i in range(5)],
    }


def test_session_lifecycle_and_defaults(vpc: Any, world: dict[str, Any]) -> None:
    name = unique("seed")
    session = create_session(
        vpc,
        name=name,
        priority=11,
        traffic_mirror_filter_id=world["filter"],
        traffic_mirror_sources=[world["sources"][0]],
        traffic_mirror_target_id=world["target"],
    )
    assert session.virtual_network_id == 1
    assert session.packet_length == 96
    assert session.enabled is True
    assert session.type == "eni"
    assert session.traffic_mirror_target_type == "eni"
    assert session.description == ""
    assert session.traffic_mirror_sources == [world["sources"][0]]

    # The SDK sends virtual_network_id and packet_length as strings on create, as Huawei's
    # schema says; enabled as a string on update.
    other = create_session(
        vpc,
        priority=12,
        traffic_mirror_filter_id=world["filter"],
        traffic_mirror_sources=[world["sources"][1]],
        traffic_mirror_target_id=world["target"],
        virtual_network_id="4242",
        packet_length="1460",
        enabled="false",
        description="second",
    )
    assert (other.virtual_network_id, other.packet_length, other.enabled) == (4242, 1460, False)

    updated = vpc.update_traffic_mirror_session(
        UpdateTrafficMirrorSessionRequest(
            session.id,
            UpdateTrafficMirrorSessionRequestBody(
                UpdateTrafficMirrorSessionOption(
                    enabled="false", packet_length=128, priority=5, virtual_network_id=100
                )
            ),
        )
    ).traffic_mirror_session
    assert (updated.enabled, updated.packet_length, updated.priority) == (False, 128, 5)
    assert updated.virtual_network_id == 100
    assert updated.name == name

    added = vpc.add_sources_to_traffic_mirror_session(
        AddSourcesToTrafficMirrorSessionRequest(
            session.id,
            AddSourcesToTrafficMirrorSessionRequestBody(sources_body(world["sources"][2:4])),
        )
    ).traffic_mirror_session
    assert added.traffic_mirror_sources == [world["sources"][0], *world["sources"][2:4]]

    # Terraform's order: remove every old source (zero sources for a moment), then add.
    emptied = vpc.remove_sources_from_traffic_mirror_session(
        RemoveSourcesFromTrafficMirrorSessionRequest(
            session.id,
            RemoveSourcesFromTrafficMirrorSessionRequestBody(
                sources_body(added.traffic_mirror_sources)
            ),
        )
    ).traffic_mirror_session
    assert emptied.traffic_mirror_sources == []
    refilled = vpc.add_sources_to_traffic_mirror_session(
        AddSourcesToTrafficMirrorSessionRequest(
            session.id,
            AddSourcesToTrafficMirrorSessionRequestBody(sources_body([world["sources"][4]])),
        )
    ).traffic_mirror_session
    assert refilled.traffic_mirror_sources == [world["sources"][4]]

    shown = vpc.show_traffic_mirror_session(ShowTrafficMirrorSessionRequest(session.id))
    assert shown.traffic_mirror_session.traffic_mirror_sources == [world["sources"][4]]

    by_filter = vpc.list_traffic_mirror_sessions(
        ListTrafficMirrorSessionsRequest(traffic_mirror_filter_id=world["filter"])
    )
    assert [s.id for s in by_filter.traffic_mirror_sessions] == [session.id, other.id]
    for query, expected in [
        ({"enabled": "false", "priority": "12"}, [other.id]),
        ({"virtual_network_id": "100"}, [session.id]),
        ({"packet_length": "1460"}, [other.id]),
        ({"name": name}, [session.id]),
        ({"description": "second"}, [other.id]),
    ]:
        listed = vpc.list_traffic_mirror_sessions(
            ListTrafficMirrorSessionsRequest(traffic_mirror_filter_id=world["filter"], **query)
        )
        assert [s.id for s in listed.traffic_mirror_sessions] == expected, query

    # A filter in use cannot be deleted.
    with pytest.raises(ClientRequestException) as info:
        vpc.delete_traffic_mirror_filter(DeleteTrafficMirrorFilterRequest(world["filter"]))
    assert info.value.status_code == 409
    assert info.value.error_code == "VPC.2901"

    vpc.delete_traffic_mirror_session(DeleteTrafficMirrorSessionRequest(session.id))
    vpc.delete_traffic_mirror_session(DeleteTrafficMirrorSessionRequest(other.id))
    with pytest.raises(ClientRequestException) as info:
        vpc.show_traffic_mirror_session(ShowTrafficMirrorSessionRequest(session.id))
    assert info.value.status_code == 404
    vpc.delete_traffic_mirror_filter(DeleteTrafficMirrorFilterRequest(world["filter"]))


def session_body(world: dict[str, Any], **change: Any) -> dict[str, Any]:
    option = {
        "name": unique("bad"),
        "traffic_mirror_filter_id": world["filter"],
        "traffic_mirror_sources": [world["sources"][0]],
        "traffic_mirror_target_id": world["target"],
        "traffic_mirror_target_type": "eni",
        "priority": 1,
    }
    option.update(change)
    return {"traffic_mirror_session": {k: v for k, v in option.items() if v is not None}}


BAD_SESSIONS: list[tuple[dict[str, Any], int, str]] = [
    ({"virtual_network_id": 16_777_216}, 400, "virtual_network_id: must be 0-16777215"),
    ({"virtual_network_id": -1}, 400, "virtual_network_id"),
    ({"virtual_network_id": "one"}, 400, "virtual_network_id: must be an integer"),
    ({"packet_length": 0}, 400, "packet_length: must be 1-1460"),
    ({"packet_length": "1461"}, 400, "packet_length: must be 1-1460"),
    ({"priority": 32767}, 400, "priority: must be 1-32766"),
    ({"priority": None}, 400, "priority: required"),
    ({"enabled": "yes"}, 400, "enabled: must be true or false"),
    ({"enabled": 1}, 400, "enabled"),
    ({"traffic_mirror_target_type": "nlb"}, 400, "traffic_mirror_target_type: must be one of"),
    # 'elb' names a target group (docs/elb.md); the world's target is a port.
    ({"traffic_mirror_target_type": "elb"}, 404, "no such target group"),
    ({"type": "eip"}, 400, "type"),
    ({"traffic_mirror_sources": []}, 400, "list of 1-10 port ids"),
    ({"traffic_mirror_sources": "p"}, 400, "traffic_mirror_sources"),
    ({"traffic_mirror_sources": [f"p{i}" for i in range(11)]}, 400, "list of 1-10 port ids"),
    ({"traffic_mirror_sources": ["x", "x"]}, 400, "more than once"),
    ({"traffic_mirror_sources": ["no-such-port"]}, 404, "no-such-port"),
    ({"traffic_mirror_target_id": "no-such-port"}, 404, "traffic_mirror_target_id"),
    ({"traffic_mirror_filter_id": "no-such-filter"}, 404, "traffic_mirror_filter_id"),
    ({"name": "ä" * 65}, 400, "name"),
    ({"surprise": True}, 400, "surprise"),
]


@pytest.mark.parametrize(("change", "status", "named"), BAD_SESSIONS)
def test_bad_session_is_refused_and_changes_nothing(
    raw: Raw, server: Any, world: dict[str, Any], change: dict[str, Any], status: int, named: str
) -> None:
    before = snapshot(server.db_url)
    response = raw.v3("POST", "traffic-mirror-sessions", session_body(world, **change))
    assert response.status_code == status, response.text
    assert named in response.json()["error_msg"]
    assert response.json()["error_code"].startswith("VPC.")
    assert snapshot(server.db_url) == before


def test_target_cannot_be_a_source(raw: Raw, world: dict[str, Any]) -> None:
    response = raw.v3(
        "POST",
        "traffic-mirror-sessions",
        session_body(world, traffic_mirror_sources=[world["target"]]),
    )
    assert response.status_code == 400
    assert "different ports" in response.json()["error_msg"]
    created = raw.v3("POST", "traffic-mirror-sessions", session_body(world)).json()
    session_id = created["traffic_mirror_session"]["id"]
    for method, path, body in [
        (
            "PUT",
            f"traffic-mirror-sessions/{session_id}/add-sources",
            {"traffic_mirror_session": {"traffic_mirror_sources": [world["target"]]}},
        ),
        (
            "PUT",
            f"traffic-mirror-sessions/{session_id}",
            {"traffic_mirror_session": {"traffic_mirror_target_id": world["sources"][0]}},
        ),
    ]:
        response = raw.v3(method, path, body)
        assert response.status_code == 400, response.text
        assert "different ports" in response.json()["error_msg"]


def test_session_priority_is_unique_among_sessions_sharing_a_source(
    raw: Raw, server: Any, world: dict[str, Any]
) -> None:
    shared, other = world["sources"][0], world["sources"][1]
    first = raw.v3("POST", "traffic-mirror-sessions", session_body(world, priority=3)).json()
    before = snapshot(server.db_url)
    clash = raw.v3("POST", "traffic-mirror-sessions", session_body(world, priority=3))
    assert clash.status_code == 409
    assert clash.json()["error_code"] == "VPC.2902"
    assert first["traffic_mirror_session"]["id"] in clash.json()["error_msg"]
    assert snapshot(server.db_url) == before
    # Same priority on a session that shares no source is fine.
    elsewhere = raw.v3(
        "POST",
        "traffic-mirror-sessions",
        session_body(world, priority=3, traffic_mirror_sources=[other]),
    )
    assert elsewhere.status_code == 201
    second_id = elsewhere.json()["traffic_mirror_session"]["id"]
    # ...until it would share one, by add-sources...
    response = raw.v3(
        "PUT",
        f"traffic-mirror-sessions/{second_id}/add-sources",
        {"traffic_mirror_session": {"traffic_mirror_sources": [shared]}},
    )
    assert response.status_code == 409
    # ...or a priority update onto a taken one.
    fourth = raw.v3(
        "POST",
        "traffic-mirror-sessions",
        session_body(world, priority=4, traffic_mirror_sources=[shared]),
    ).json()
    response = raw.v3(
        "PUT",
        f"traffic-mirror-sessions/{fourth['traffic_mirror_session']['id']}",
        {"traffic_mirror_session": {"priority": 3}},
    )
    assert response.status_code == 409
    assert response.json()["error_code"] == "VPC.2902"


def test_quotas(raw: Raw, vpc: Any, world: dict[str, Any]) -> None:
    port = world["sources"][0]
    for priority in (1, 2, 3):
        created = raw.v3("POST", "traffic-mirror-sessions", session_body(world, priority=priority))
        assert created.status_code == 201, created.text
    fourth = raw.v3("POST", "traffic-mirror-sessions", session_body(world, priority=4))
    assert fourth.status_code == 409
    assert fourth.json()["error_code"] == "VPC.2903"
    assert port in fourth.json()["error_msg"] and "3 sessions" in fourth.json()["error_msg"]

    many = [make_port(raw, unique("m"))["id"] for _ in range(10)]
    session = raw.v3(
        "POST",
        "traffic-mirror-sessions",
        session_body(world, priority=9, traffic_mirror_sources=many),
    ).json()["traffic_mirror_session"]
    assert len(session["traffic_mirror_sources"]) == 10
    response = raw.v3(
        "PUT",
        f"traffic-mirror-sessions/{session['id']}/add-sources",
        {"traffic_mirror_session": {"traffic_mirror_sources": [world["sources"][4]]}},
    )
    assert response.status_code == 409
    assert "at most 10" in response.json()["error_msg"]
    # A port named by a session cannot be deleted; an unused one can.
    response = raw.internal("DELETE", f"ports/{port}")
    assert response.status_code == 409
    assert response.json()["error_code"] == "VPC.2901"
    spare = make_port(raw)
    assert raw.internal("DELETE", f"ports/{spare['id']}").status_code == 204


def test_sources_body_must_hold_real_changes(raw: Raw, world: dict[str, Any]) -> None:
    session = raw.v3("POST", "traffic-mirror-sessions", session_body(world)).json()[
        "traffic_mirror_session"
    ]
    path = f"traffic-mirror-sessions/{session['id']}"
    for suffix, sources, named in [
        ("add-sources", [world["sources"][0]], "already a source"),
        ("remove-sources", [world["sources"][1]], "not a source"),
        ("add-sources", [], "list of 1-10"),
    ]:
        response = raw.v3(
            "PUT",
            f"{path}/{suffix}",
            {"traffic_mirror_session": {"traffic_mirror_sources": sources}},
        )
        assert response.status_code == 400, response.text
        assert named in response.json()["error_msg"]
    response = raw.v3(
        "PUT", path, {"traffic_mirror_session": {"traffic_mirror_sources": [world["sources"][1]]}}
    )
    assert response.status_code == 400
    assert "add-sources" in response.json()["error_msg"]
