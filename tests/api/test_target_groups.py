"""Target groups through the internal API (docs/elb.md): members and their numbers, bad
input refused with the state unchanged, other projects and agent keys refused."""

from __future__ import annotations

from typing import Any

import pytest

from support.api import ApiServer, Raw, make_port, snapshot, unique

GROUPS = "target-groups"


def create_group(raw: Raw, ports: list[str] | None = None, name: str = "collectors") -> Any:
    body: dict[str, Any] = {"name": name, "description": "IDS"}
    if ports is not None:
        body["ports"] = ports
    response = raw.internal("POST", GROUPS, {"target_group": body})
    assert response.status_code == 201, response.text
    return response.json()["target_group"]


def members(group: dict[str, Any]) -> list[tuple[int, str]]:
    return [(m["number"], m["port_id"]) for m in group["members"]]


def test_create_show_change_and_delete(raw: Raw) -> None:
    a, b, c = (make_port(raw)["id"] for _ in range(3))
    group = create_group(raw, [a, b])
    assert group["id"].startswith("tg-") and group["name"] == "collectors"
    assert members(group) == [(0, a), (1, b)]
    # Health is the health part's to fill: what is stored, not yet heard from.
    assert [(m["healthy"], m["last_heartbeat"]) for m in group["members"]] == [(False, None)] * 2
    gid = group["id"]
    answer = raw.internal("PUT", f"{GROUPS}/{gid}/remove-members", {"target_group": {"ports": [a]}})
    assert answer.status_code == 200, answer.text
    assert members(answer.json()["target_group"]) == [(1, b)]
    answer = raw.internal("PUT", f"{GROUPS}/{gid}/add-members", {"target_group": {"ports": [c]}})
    assert members(answer.json()["target_group"]) == [(0, c), (1, b)]
    answer = raw.internal("PUT", f"{GROUPS}/{gid}", {"target_group": {"name": "renamed"}})
    assert answer.json()["target_group"]["name"] == "renamed"
    assert answer.json()["target_group"]["description"] == "IDS"
    shown = raw.internal("GET", f"{GROUPS}/{gid}").json()["target_group"]
    assert shown == answer.json()["target_group"]
    listed = raw.internal("GET", f"{GROUPS}?name=renamed").json()
    assert gid in [g["id"] for g in listed["target_groups"]]
    # A member port cannot be deleted; once the group is gone it can.
    assert raw.internal("DELETE", f"ports/{b}").status_code == 409
    assert raw.internal("DELETE", f"{GROUPS}/{gid}").status_code == 204
    assert raw.internal("GET", f"{GROUPS}/{gid}").status_code == 404
    assert raw.internal("DELETE", f"ports/{b}").status_code == 204


@pytest.mark.parametrize(
    ("path", "body", "status", "named"),
    [
        ("", {"target_group": {"name": "x", "ports": ["PORT", "PORT"]}}, 400, "more than once"),
        ("", {"target_group": {"name": "x", "ports": ["nope"]}}, 404, "nope"),
        ("", {"target_group": {"name": "x", "ports": "PORT"}}, 400, "ports"),
        ("", {"target_group": {"name": "x" * 65}}, 400, "name"),
        ("", {"target_group": {"name": "x", "extra": 1}}, 400, "extra"),
        ("/GROUP/add-members", {"target_group": {"ports": ["PORT"]}}, 400, "already a member"),
        ("/GROUP/add-members", {"target_group": {"ports": []}}, 400, "ports"),
        ("/GROUP/remove-members", {"target_group": {"ports": ["OTHER"]}}, 400, "not a member"),
        ("/nope/add-members", {"target_group": {"ports": ["OTHER"]}}, 404, "nope"),
    ],
)
def test_bad_input_changes_nothing(
    raw: Raw, server: ApiServer, path: str, body: dict[str, Any], status: int, named: str
) -> None:
    port, other = make_port(raw)["id"], make_port(raw)["id"]
    group = create_group(raw, [port])

    def fill(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        if isinstance(value, list):
            return [fill(v) for v in value]
        return {"PORT": port, "OTHER": other}.get(value, value) if isinstance(value, str) else value

    before = snapshot(server.db_url)
    method = "POST" if not path else "PUT"
    response = raw.internal(method, GROUPS + path.replace("GROUP", group["id"]), fill(body))
    assert response.status_code == status, response.text
    assert named in response.json()["error_msg"]
    assert snapshot(server.db_url) == before


def test_other_projects_and_agent_keys_are_refused(raw: Raw, server: ApiServer) -> None:
    port = make_port(raw)["id"]
    group = create_group(raw, [port])
    before = snapshot(server.db_url)
    # Another project's key on this project's path, and on its own path naming our ids.
    mine = f"/internal/v1/{server.project_id}/{GROUPS}/{group['id']}"
    theirs = f"/internal/v1/{server.other_project_id}/{GROUPS}"
    other = {"ak": server.other_ak, "sk": server.other_sk, "project_id": server.other_project_id}
    assert raw.request("GET", mine, **other).status_code == 403
    assert raw.request("GET", f"{theirs}/{group['id']}", **other).status_code == 404
    assert raw.request("DELETE", f"{theirs}/{group['id']}", **other).status_code == 404
    created = raw.request("POST", theirs, {"target_group": {"name": "x", "ports": [port]}}, **other)
    assert created.status_code == 404, created.text
    # A host's agent key may not touch groups at all.
    host = unique("agent")
    credential = raw.internal("POST", "hosts", {"host": host}).json()["credential"]
    agent = {k: credential[k] for k in ("ak", "sk", "project_id")}
    for method, path, body in (
        ("GET", mine, None),
        ("DELETE", mine, None),
        ("PUT", f"{mine}/remove-members", {"target_group": {"ports": [port]}}),
        ("POST", f"/internal/v1/{server.project_id}/{GROUPS}", {"target_group": {"name": "x"}}),
    ):
        assert raw.request(method, path, body, **agent).status_code == 403, (method, path)
    after = snapshot(server.db_url)
    after.pop("agent_hosts"), before.pop("agent_hosts")
    assert after == before
