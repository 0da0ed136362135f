"""The internal API (agents and manual ports) and the read-only v1 ports API."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from support.api import Raw, make_port, snapshot, unique
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


REFUSED_ADDRESSES = [
    ("ipv4", "255.255.255.255", "limited broadcast"),
    ("ipv4", "10.0.0.255/24", "broadcast address of 10.0.0.0/24"),
    ("ipv4", "224.0.0.5", "multicast"),
    ("ipv4", "0.0.0.0", "unspecified"),
    ("ipv4", "127.0.0.1", "loopback"),
    ("ipv4", "169.254.169.254", "link-local"),
    ("ipv6", "ff02::1", "multicast"),
    ("ipv6", "::", "unspecified"),
    ("ipv6", "::1", "loopback"),
    ("ipv6", "fe80::1", "link-local"),
    ("ipv6", "::ffff:255.255.255.255", "limited broadcast"),
]


@pytest.mark.parametrize(("family", "address", "kind"), REFUSED_ADDRESSES)
def test_ports_need_unicast_addresses(
    raw: Raw, server: Any, family: str, address: str, kind: str
) -> None:
    """A target address that is not one host's would flood or loop the mirror (issue 9,
    item 6): refused when created by hand and when registered, naming the field."""
    host = unique("flood")
    register(raw, host, [{"device": "eth0", "ipv4": ["10.0.0.5"], "ipv6": []}])
    good = {"ipv4": ["10.0.0.6"], "ipv6": ["2001:db8::6"]}
    port = {"device": "eth1", **good, family: [good[family][0], address]}
    before = snapshot(server.db_url)
    created = raw.internal("POST", "ports", {"port": {"host": host, **port}})
    registered = raw.internal("PUT", f"hosts/{host}/ports", {"ports": [port]})
    refreshed = raw.internal(
        "PUT", f"hosts/{host}/ports", {"ports": [{"device": "eth0", family: [address]}]}
    )
    for response, field in (
        (created, f"port.{family}"),
        (registered, f"ports.0.{family}"),
        (refreshed, f"ports.0.{family}"),
    ):
        assert response.status_code == 400, response.text
        message = response.json()["error_msg"]
        assert message.startswith(f"{field}: ") and kind in message, message
        assert response.json()["error_code"] == "VPC.0002"
    assert snapshot(server.db_url) == before


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
    # A second host serving the session (a source port there).
    other_host = unique("src2")
    other_port = register(raw, other_host, [{"device": "eth0", "ipv4": ["10.1.0.2"]}])[0]
    added = raw.v3(
        "PUT",
        f"traffic-mirror-sessions/{session['id']}/add-sources",
        {"traffic_mirror_session": {"traffic_mirror_sources": [other_port["id"]]}},
    )
    assert added.status_code == 200, added.text
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


def test_session_stats_of_huge_counters_and_made_up_reports(raw: Raw) -> None:
    """Two hosts near the top of 64-bit counters sum exactly (SQLite answered 500), and
    reports for ids or hosts that serve nothing are not stored (issue 9, items 8-9)."""
    hosts = [unique("big"), unique("big")]
    sources = [
        register(raw, host, [{"device": "eth0", "ipv4": [f"10.2.0.{i + 1}"]}])[0]
        for i, host in enumerate(hosts)
    ]
    target = make_port(raw, unique("dst"), "10.2.0.9")
    filter_id = raw.v3(
        "POST", "traffic-mirror-filters", {"traffic_mirror_filter": {"name": "big"}}
    ).json()["traffic_mirror_filter"]["id"]
    session = raw.v3(
        "POST",
        "traffic-mirror-sessions",
        {
            "traffic_mirror_session": {
                "name": "big",
                "traffic_mirror_filter_id": filter_id,
                "traffic_mirror_sources": [p["id"] for p in sources],
                "traffic_mirror_target_id": target["id"],
                "traffic_mirror_target_type": "eni",
                "priority": 1,
            }
        },
    ).json()["traffic_mirror_session"]
    top = 2**63 - 1
    for host in hosts:
        body = {"sessions": {session["id"]: {"packets": top, "bytes": top}}}
        assert raw.internal("PUT", f"hosts/{host}/counters", body).status_code == 204
    made_up = {"sessions": {unique("no-such-session"): {"packets": 1, "bytes": 1}}}
    ghosts = [unique("ghost") for _ in range(20)]
    for host in [*hosts[:1], *ghosts]:
        both = {"sessions": {**made_up["sessions"], session["id"]: {"packets": 1, "bytes": 1}}}
        assert raw.internal("PUT", f"hosts/{host}/counters", both).status_code == 204
    assert raw.internal("PUT", f"hosts/{hosts[0]}/counters", {"sessions": {
        session["id"]: {"packets": top, "bytes": top}, **made_up["sessions"]
    }}).status_code == 204  # fmt: skip
    answer = raw.internal("GET", "session-stats")
    assert answer.status_code == 200, answer.text
    stats = answer.json()
    assert stats["sessions"][session["id"]] == {"packets": 2 * top, "bytes": 2 * top}
    assert not set(made_up["sessions"]) & set(stats["sessions"])
    assert not set(ghosts) & set(stats["hosts"])
    # Beyond a 64-bit signed counter a report is refused, naming the field.
    bad = raw.internal(
        "PUT",
        f"hosts/{hosts[0]}/counters",
        {"sessions": {session["id"]: {"packets": top + 1, "bytes": 0}}},
    )
    assert bad.status_code == 400 and "packets" in bad.json()["error_msg"]
