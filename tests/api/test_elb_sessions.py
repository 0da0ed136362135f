"""Sessions that mirror to a target group (`traffic_mirror_target_type: "elb"`) through
the official SDK (docs/elb.md): create, show, list, change of target; bad targets
refused with the state unchanged."""

from __future__ import annotations

from typing import Any

import pytest
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
from huaweicloudsdkvpc.v3 import (
    AddSourcesToTrafficMirrorSessionRequest,
    AddSourcesToTrafficMirrorSessionRequestBody,
    ListTrafficMirrorSessionsRequest,
    ShowTrafficMirrorSessionRequest,
    UpdateTrafficMirrorSessionOption,
    UpdateTrafficMirrorSessionRequest,
    UpdateTrafficMirrorSessionRequestBody,
)
from test_sessions import create_session, new_filter, sources_body
from test_target_groups import GROUPS, create_group

from support.api import ApiServer, Raw, make_port, snapshot, unique


@pytest.fixture
def world(vpc: Any, raw: Raw) -> dict[str, Any]:
    """A filter, two source ports, a group of two collector ports, an empty group, a port."""
    host = unique("h")
    collectors = [make_port(raw, unique("col"), f"10.0.9.{i}")["id"] for i in (1, 2)]
    return {
        "filter": new_filter(vpc),
        "sources": [make_port(raw, f"{host}-{i}", f"10.0.0.{i + 1}")["id"] for i in range(2)],
        "collectors": collectors,
        "group": create_group(raw, collectors)["id"],
        "empty": create_group(raw, [])["id"],
        "port": make_port(raw, unique("capture"), "10.0.8.8")["id"],
    }


def elb_session(vpc: Any, world: dict[str, Any], **fields: Any) -> Any:
    fields.setdefault("priority", 1)
    fields.setdefault("traffic_mirror_filter_id", world["filter"])
    fields.setdefault("traffic_mirror_sources", [world["sources"][0]])
    fields.setdefault("traffic_mirror_target_id", world["group"])
    fields.setdefault("traffic_mirror_target_type", "elb")
    return create_session(vpc, **fields)


def update(vpc: Any, session_id: str, **fields: Any) -> Any:
    body = UpdateTrafficMirrorSessionRequestBody(UpdateTrafficMirrorSessionOption(**fields))
    request = UpdateTrafficMirrorSessionRequest(session_id, body)
    return vpc.update_traffic_mirror_session(request).traffic_mirror_session


def test_a_session_mirrors_to_a_group(vpc: Any, raw: Raw, world: dict[str, Any]) -> None:
    session = elb_session(vpc, world)
    assert (session.traffic_mirror_target_type, session.traffic_mirror_target_id) == (
        "elb",
        world["group"],
    )
    shown = vpc.show_traffic_mirror_session(ShowTrafficMirrorSessionRequest(session.id))
    assert shown.traffic_mirror_session.traffic_mirror_target_id == world["group"]
    listed = vpc.list_traffic_mirror_sessions(
        ListTrafficMirrorSessionsRequest(traffic_mirror_target_type="elb")
    ).traffic_mirror_sessions
    assert session.id in [s.id for s in listed]
    # While the session uses it: the group cannot go, nor its last member.
    gid = world["group"]
    assert raw.internal("DELETE", f"{GROUPS}/{gid}").status_code == 409
    body = {"target_group": {"ports": world["collectors"]}}
    answer = raw.internal("PUT", f"{GROUPS}/{gid}/remove-members", body)
    assert answer.status_code == 409 and "at least one member" in answer.json()["error_msg"]
    one = {"target_group": {"ports": world["collectors"][:1]}}
    assert raw.internal("PUT", f"{GROUPS}/{gid}/remove-members", one).status_code == 200
    # A source may not join the group the session mirrors to.
    adding = {"target_group": {"ports": [world["sources"][0]]}}
    answer = raw.internal("PUT", f"{GROUPS}/{gid}/add-members", adding)
    assert answer.status_code == 400 and "must be different" in answer.json()["error_msg"]
    # Back to a port, and to the group again, through an update of the target.
    moved = update(vpc, session.id, traffic_mirror_target_id=world["port"],
                   traffic_mirror_target_type="eni")  # fmt: skip
    assert (moved.traffic_mirror_target_type, moved.traffic_mirror_target_id) == (
        "eni",
        world["port"],
    )
    assert raw.internal("DELETE", f"{GROUPS}/{gid}").status_code == 204
    assert raw.internal("DELETE", f"ports/{world['port']}").status_code == 409


@pytest.mark.parametrize(
    ("change", "status", "named"),
    [
        ({"traffic_mirror_target_id": "tg-nope"}, 404, "no such target group"),
        ({"traffic_mirror_target_id": "EMPTY"}, 400, "has no members"),
        ({"traffic_mirror_target_id": "PORT"}, 404, "no such target group"),
        ({"traffic_mirror_sources": ["COLLECTOR"]}, 400, "must be different"),
        ({"traffic_mirror_target_id": "OTHER"}, 404, "no such target group"),
    ],
)
def test_bad_group_targets_change_nothing(
    vpc: Any,
    raw: Raw,
    server: ApiServer,
    world: dict[str, Any],
    change: dict[str, Any],
    status: int,
    named: str,
) -> None:
    other = Raw(server)
    theirs = other.request(
        "POST",
        f"/internal/v1/{server.other_project_id}/{GROUPS}",
        {"target_group": {"name": "theirs"}},
        ak=server.other_ak,
        sk=server.other_sk,
        project_id=server.other_project_id,
    )
    assert theirs.status_code == 201, theirs.text
    names = {
        "EMPTY": world["empty"],
        "PORT": world["port"],
        "COLLECTOR": world["collectors"][1],
        "OTHER": theirs.json()["target_group"]["id"],
    }
    fields = {
        k: [names.get(x, x) for x in v] if isinstance(v, list) else names.get(v, v)
        for k, v in change.items()
    }
    before = snapshot(server.db_url)
    with pytest.raises(ClientRequestException) as info:
        elb_session(vpc, world, **fields)
    assert info.value.status_code == status
    assert named in info.value.error_msg
    assert snapshot(server.db_url) == before


def test_updates_and_added_sources_keep_sources_off_the_group(
    vpc: Any, server: ApiServer, world: dict[str, Any]
) -> None:
    session = elb_session(vpc, world)
    on_port = create_session(
        vpc,
        priority=2,
        traffic_mirror_filter_id=world["filter"],
        traffic_mirror_sources=[world["collectors"][0]],
        traffic_mirror_target_id=world["port"],
    )
    before = snapshot(server.db_url)
    refusals = [
        # A source that is a member: adding it, or moving a session onto its group.
        lambda: vpc.add_sources_to_traffic_mirror_session(
            AddSourcesToTrafficMirrorSessionRequest(
                session.id,
                AddSourcesToTrafficMirrorSessionRequestBody(sources_body([world["collectors"][1]])),
            )
        ),
        lambda: update(
            vpc,
            on_port.id,
            traffic_mirror_target_id=world["group"],
            traffic_mirror_target_type="elb",
        ),
        # The kind alone: the port id is no group, the group id no port.
        lambda: update(vpc, on_port.id, traffic_mirror_target_type="elb"),
        lambda: update(vpc, session.id, traffic_mirror_target_type="eni"),
        lambda: update(vpc, session.id, traffic_mirror_target_id=world["empty"]),
    ]
    for refused in refusals:
        with pytest.raises(ClientRequestException) as info:
            refused()
        assert info.value.status_code in (400, 404), info.value.error_msg
        assert snapshot(server.db_url) == before
