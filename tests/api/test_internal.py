"""The internal API (agents and manual ports) and the read-only v1 ports API."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from api_support import Raw, make_port, snapshot, unique
from sqlalchemy import create_engine, text

from vxtap.model import DesiredState


def register(raw: Raw, host: str, ports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    response = raw.internal("PUT", f"hosts/{host}/ports", {"ports": ports})
    assert response.status_code == 200, response.text
    result: list[dict[str, Any]] = response.json()["ports"]
    return result


def test_registration_keeps_ids_stable_and_refreshes_addresses(raw: Raw) -> None:
    host = unique("node")
    first = register(
        raw,
        host,
        [
            {"device": "eth0", "mac": "52:54:00:AA:BB:01", "ipv4": ["10.0.0.5/24"], "ipv6": []},
            {"device": "eth1", "ipv4": [], "ipv6": ["2001:db8::5"]},
        ],
    )
    by_device = {p["device"]: p for p in first}
    assert by_device["eth0"]["mac"] == "52:54:00:aa:bb:01"
    assert by_device["eth0"]["ipv4"] == ["10.0.0.5"]
    assert by_device["eth1"]["ipv6"] == ["2001:db8::5"]
    assert by_device["eth1"]["mac"] is None

    again = register(raw, host, [{"device": "eth0", "ipv4": ["10.0.0.6"], "ipv6": []}])
    by_device_again = {p["device"]: p for p in again}
    assert by_device_again["eth0"]["id"] == by_device["eth0"]["id"]
    assert by_device_again["eth0"]["ipv4"] == ["10.0.0.6"]
    # eth1 is no longer reported but kept (a session may name it).
    assert by_device_again["eth1"]["id"] == by_device["eth1"]["id"]


@pytest.mark.parametrize(
    ("port", "named"),
    [
        ({"device": "eth0/1"}, "device"),
        ({"device": "a-very-long-interface-name"}, "device"),
        ({"device": "eth0", "mac": "zz:zz"}, "mac"),
        ({"device": "eth0", "ipv4": ["2001:db8::1"]}, "not an IPv4 address"),
        ({"device": "eth0", "ipv6": ["10.0.0.1"]}, "not an IPv6 address"),
        ({"device": "eth0", "ipv4": "10.0.0.1"}, "ipv4"),
    ],
)
def test_bad_registration(raw: Raw, server: Any, port: dict[str, Any], named: str) -> None:
    before = snapshot(server.db_url)
    response = raw.internal("PUT", f"hosts/{unique('bad')}/ports", {"ports": [port]})
    assert response.status_code == 400, response.text
    assert named in response.json()["error_msg"]
    assert snapshot(server.db_url) == before
    response = raw.internal("PUT", "hosts/bad host!/ports", {"ports": []})
    assert response.status_code == 400


def test_manual_port_and_v1_shape(raw: Raw, server: Any) -> None:
    host = unique("ids")
    port = make_port(raw, host, "192.0.2.7")
    duplicate = raw.internal(
        "POST", "ports", {"port": {"host": host, "device": "eth0", "ipv4": ["192.0.2.8"]}}
    )
    assert duplicate.status_code == 409
    assert port["id"] in duplicate.json()["error_msg"]

    shown = raw.request("GET", f"/v1/{server.project_id}/ports/{port['id']}")
    assert shown.status_code == 200
    v1 = shown.json()["port"]
    assert v1["id"] == port["id"]
    assert v1["name"] == "eth0"
    assert v1["binding:host_id"] == host
    assert v1["fixed_ips"] == [{"ip_address": "192.0.2.7", "subnet_id": ""}]
    assert v1["status"] == "ACTIVE"

    listed = raw.request("GET", f"/v1/{server.project_id}/ports?binding:host_id={host}")
    assert [p["id"] for p in listed.json()["ports"]] == [port["id"]]
    assert raw.request("GET", f"/v1/{server.project_id}/ports/nope").status_code == 404


def test_desired_state_and_counters(raw: Raw) -> None:
    source_host, target_host = unique("src"), unique("dst")
    ports = register(raw, source_host, [{"device": "eth0", "ipv4": ["10.1.0.1"], "ipv6": []}])
    target = make_port(raw, target_host, "10.1.0.9")
    filter_id = raw.v3(
        "POST", "traffic-mirror-filters", {"traffic_mirror_filter": {"name": "seed"}}
    ).json()["traffic_mirror_filter"]["id"]
    rule = raw.v3(
        "POST",
        "traffic-mirror-filter-rules",
        {
            "traffic_mirror_filter_rule": {
                "traffic_mirror_filter_id": filter_id,
                "direction": "ingress",
                "protocol": "TCP",
                "ethertype": "IPv4",
                "action": "accept",
                "priority": 1,
                "destination_port_range": "80-80",
            }
        },
    ).json()["traffic_mirror_filter_rule"]
    session = raw.v3(
        "POST",
        "traffic-mirror-sessions",
        {
            "traffic_mirror_session": {
                "name": "seed",
                "traffic_mirror_filter_id": filter_id,
                "traffic_mirror_sources": [ports[0]["id"]],
                "traffic_mirror_target_id": target["id"],
                "traffic_mirror_target_type": "eni",
                "virtual_network_id": 77,
                "priority": 1,
            }
        },
    ).json()["traffic_mirror_session"]

    answer = raw.internal("GET", f"hosts/{source_host}/desired-state")
    assert answer.status_code == 200
    state = DesiredState.model_validate(answer.json())
    assert [p.id for p in state.ports] == [ports[0]["id"]]
    assert [s.id for s in state.sessions] == [session["id"]]
    assert state.sessions[0].vni == 77
    assert [t.address for t in state.targets] == ["10.1.0.9"]
    assert state.filters[0].rules[0].id == rule["id"]
    assert str(state.filters[0].rules[0].destination_ports) == "80-80"

    # The revision changes with any change, and only then.
    again = DesiredState.model_validate(
        raw.internal("GET", f"hosts/{source_host}/desired-state").json()
    )
    assert again.revision == state.revision
    raw.v3(
        "PUT",
        f"traffic-mirror-sessions/{session['id']}",
        {"traffic_mirror_session": {"enabled": "false"}},
    )
    changed = DesiredState.model_validate(
        raw.internal("GET", f"hosts/{source_host}/desired-state").json()
    )
    assert changed.revision != state.revision
    assert changed.sessions[0].enabled is False

    # Conditional fetch: ETag is "h<host revision>-<content revision>".
    path = f"/internal/v1/{raw.server.project_id}/hosts/{source_host}/desired-state"
    current = raw.request("GET", path)
    etag = current.headers["ETag"]
    counter, _, revision = etag.strip('"').partition("-")
    assert revision == changed.revision and counter.startswith("h") and int(counter[1:]) > 0
    # The whole tag, a bare content revision (an agent after a restart), weak, in a list, *,
    # and the "<project counter>-<revision>" tag of an older server (old agents keep working).
    for unchanged in (etag, f'"{changed.revision}"', f'"x", W/{etag}', "*", f'"1-{revision}"'):
        answer = raw.request("GET", path, extra_headers={"If-None-Match": unchanged})
        assert answer.status_code == 304, unchanged
        assert answer.content == b""
        assert answer.headers["ETag"] == etag
    for stale_tag in (f'"{state.revision}"', f'"{counter}0-{state.revision}"', '"garbage', ","):
        stale = raw.request("GET", path, extra_headers={"If-None-Match": stale_tag})
        assert stale.status_code == 200, stale_tag
        assert DesiredState.model_validate(stale.json()).revision == changed.revision
        assert stale.headers["ETag"] == etag
    # A write elsewhere in the project does not concern this host: same tag, nothing built.
    make_port(raw, unique("other-host"))
    bumped = raw.request("GET", path, extra_headers={"If-None-Match": etag})
    assert bumped.status_code == 304 and bumped.headers["ETag"] == etag
    # A write that concerns it but changes nothing it shows (the session's description)
    # does not move its revision either.
    raw.v3(
        "PUT",
        f"traffic-mirror-sessions/{session['id']}",
        {"traffic_mirror_session": {"description": "not in the desired state"}},
    )
    assert raw.request("GET", path, extra_headers={"If-None-Match": etag}).headers["ETag"] == etag
    # A matching revision answers without building the state: a change written past the
    # API (no revision bump) is not seen, which shows nothing was built.
    engine = create_engine(raw.server.db_url)
    try:
        with engine.begin() as connection:
            connection.execute(
                text("UPDATE sessions SET name = 'renamed-by-hand' WHERE id = :id"),
                {"id": session["id"]},
            )
    finally:
        engine.dispose()
    cheap = raw.request("GET", path, extra_headers={"If-None-Match": bumped.headers["ETag"]})
    assert cheap.status_code == 304
    rebuilt = raw.request("GET", path, extra_headers={"If-None-Match": f'"{revision}"'})
    assert rebuilt.status_code == 200
    unsigned = httpx.get(
        f"{raw.server.endpoint}{path}", headers={"If-None-Match": f'"{changed.revision}"'}
    )
    assert unsigned.status_code == 401  # the signature is checked before any 304

    # The target's host has ports but mirrors nothing.
    idle = DesiredState.model_validate(
        raw.internal("GET", f"hosts/{target_host}/desired-state").json()
    )
    assert idle.sessions == () and [p.id for p in idle.ports] == [target["id"]]

    counters = {
        "sessions": {session["id"]: {"packets": 10, "bytes": 960}},
        "rules": {rule["id"]: {"packets": 10, "bytes": 960}},
    }
    assert raw.internal("PUT", f"hosts/{source_host}/counters", counters).status_code == 204
    other_host = unique("src2")
    counters2 = {"sessions": {session["id"]: {"packets": 5, "bytes": 100}}}
    assert raw.internal("PUT", f"hosts/{other_host}/counters", counters2).status_code == 204
    # A newer report replaces the host's previous one.
    counters["sessions"][session["id"]] = {"packets": 12, "bytes": 1000}
    assert raw.internal("PUT", f"hosts/{source_host}/counters", counters).status_code == 204
    stats = raw.internal("GET", "session-stats").json()
    assert stats["sessions"][session["id"]] == {"packets": 17, "bytes": 1100}
    assert stats["rules"][rule["id"]] == {"packets": 10, "bytes": 960}
    assert {source_host, other_host} <= set(stats["hosts"])

    bad = raw.internal(
        "PUT", f"hosts/{source_host}/counters", {"sessions": {"x": {"packets": -1, "bytes": 0}}}
    )
    assert bad.status_code == 400
    assert "packets" in bad.json()["error_msg"]
    # Found by the fuzzer: values beyond 64 bits and over-long ids are input errors, not 500s.
    for body in (
        {"sessions": {"x": {"packets": 1, "bytes": 2**64}}},
        {"rules": {"r" * 37: {"packets": 1, "bytes": 1}}},
    ):
        bad = raw.internal("PUT", f"hosts/{source_host}/counters", body)
        assert bad.status_code == 400, bad.text
