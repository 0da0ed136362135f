"""Several `vxtap server` processes on one database serve one consistent state, and
concurrent conflicting writes through them cannot break the rules of docs/behaviour.md §1.6.

Run on PostgreSQL (the scale-out setup) and on one SQLite file shared by two
processes (WAL). Also: SIGKILL during a stream of writes loses no acknowledged write.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkvpc.v3 import (
    CreateTrafficMirrorFilterOption,
    CreateTrafficMirrorFilterRequest,
    CreateTrafficMirrorFilterRequestBody,
    ShowTrafficMirrorFilterRequest,
    VpcClient,
)

from support.servers import server_pair
from vxtap.auth import sign

Server = Any


def call(server: Server, method: str, path: str, body: Any = None) -> httpx.Response:
    data = json.dumps(body).encode() if body is not None else b""
    url = f"{server.endpoint}{path.replace('{p}', server.project_id)}"
    headers = {"Content-Type": "application/json"}
    headers.update(sign(method, url, headers, data, server.ak, server.sk, server.project_id))
    return httpx.request(method, url, content=data, headers=headers, timeout=60)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def two_servers(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Server, Server]]:
    db_url = (
        f"sqlite:///{tmp_path / 'shared.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_db")
    )
    with server_pair(tmp_path, db_url) as pair:
        yield pair


def test_a_write_through_one_is_read_through_the_other(two_servers: tuple[Server, Server]) -> None:
    first, second = two_servers
    clients = [
        VpcClient.new_builder()
        .with_credentials(BasicCredentials(s.ak, s.sk, s.project_id))
        .with_endpoint(s.endpoint)
        .build()
        for s in (first, second)
    ]
    option = CreateTrafficMirrorFilterOption(name="shared")
    created = clients[0].create_traffic_mirror_filter(
        CreateTrafficMirrorFilterRequest(CreateTrafficMirrorFilterRequestBody(option))
    )
    shown = clients[1].show_traffic_mirror_filter(
        ShowTrafficMirrorFilterRequest(created.traffic_mirror_filter.id)
    )
    assert shown.traffic_mirror_filter.name == "shared"


def concurrently(
    servers: tuple[Server, Server], requests: list[tuple[str, str, Any]]
) -> list[httpx.Response]:
    """All requests at once (a barrier releases them together), alternating servers."""
    barrier = threading.Barrier(len(requests))

    def one(index: int) -> httpx.Response:
        method, path, body = requests[index]
        barrier.wait()
        return call(servers[index % 2], method, path, body)

    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(one, range(len(requests))))


def setup_world(server: Server, ports: int, host: str) -> tuple[str, str, list[str]]:
    filter_id = call(
        server,
        "POST",
        "/v3/{p}/vpc/traffic-mirror-filters",
        {"traffic_mirror_filter": {"name": "c"}},
    ).json()["traffic_mirror_filter"]["id"]
    made = [
        call(
            server,
            "POST",
            "/internal/v1/{p}/ports",
            {"port": {"host": host, "device": f"eth{i}", "ipv4": [f"10.0.0.{i + 1}"]}},
        ).json()["port"]["id"]
        for i in range(ports + 1)
    ]
    return filter_id, made[-1], made[:-1]


def session(filter_id: str, target: str, sources: list[str], priority: int) -> dict[str, Any]:
    return {
        "traffic_mirror_session": {
            "name": f"s{priority}",
            "traffic_mirror_filter_id": filter_id,
            "traffic_mirror_sources": sources,
            "traffic_mirror_target_id": target,
            "traffic_mirror_target_type": "eni",
            "priority": priority,
        }
    }


def test_concurrent_conflicting_writes_keep_the_rules(two_servers: tuple[Server, Server]) -> None:
    first, second = two_servers
    filter_id, target, sources = setup_world(first, 4, "h1")

    # 12 rules with one priority in one filter and direction: exactly one wins.
    rule = {
        "traffic_mirror_filter_id": filter_id,
        "direction": "ingress",
        "protocol": "TCP",
        "ethertype": "IPv4",
        "action": "accept",
        "priority": 1,
    }
    answers = concurrently(
        two_servers,
        [("POST", "/v3/{p}/vpc/traffic-mirror-filter-rules", {"traffic_mirror_filter_rule": rule})]
        * 12,
    )
    assert Counter(a.status_code for a in answers) == {201: 1, 409: 11}, [a.text for a in answers]

    # 10 sessions on one source with one priority: exactly one wins.
    answers = concurrently(
        two_servers,
        [
            (
                "POST",
                "/v3/{p}/vpc/traffic-mirror-sessions",
                session(filter_id, target, [sources[0]], 7),
            )
        ]
        * 10,
    )
    assert Counter(a.status_code for a in answers) == {201: 1, 409: 9}, [a.text for a in answers]

    # 10 sessions on one source with distinct priorities: at most 3 per source.
    answers = concurrently(
        two_servers,
        [
            (
                "POST",
                "/v3/{p}/vpc/traffic-mirror-sessions",
                session(filter_id, target, [sources[1]], p),
            )
            for p in range(100, 110)
        ],
    )
    assert Counter(a.status_code for a in answers)[201] == 3, [a.text for a in answers]
    assert all(a.status_code in (201, 409) for a in answers)

    # Adding sources to one session from many requests at once: never more than 10.
    many = setup_world(second, 14, "h2")[2]
    base = call(
        first,
        "POST",
        "/v3/{p}/vpc/traffic-mirror-sessions",
        session(filter_id, target, many[:6], 50),
    ).json()["traffic_mirror_session"]
    answers = concurrently(
        two_servers,
        [
            (
                "PUT",
                f"/v3/{{p}}/vpc/traffic-mirror-sessions/{base['id']}/add-sources",
                {"traffic_mirror_session": {"traffic_mirror_sources": [port]}},
            )
            for port in many[6:]
        ],
    )
    assert Counter(a.status_code for a in answers) == {200: 4, 409: 4}, [a.text for a in answers]

    # The final state, read through the other server, obeys every rule.
    listed = call(second, "GET", "/v3/{p}/vpc/traffic-mirror-sessions").json()
    by_port: dict[str, list[int]] = {}
    for item in listed["traffic_mirror_sessions"]:
        assert len(item["traffic_mirror_sources"]) <= 10
        for port in item["traffic_mirror_sources"]:
            by_port.setdefault(port, []).append(item["priority"])
    for priorities in by_port.values():
        assert len(priorities) <= 3
        assert len(set(priorities)) == len(priorities)
    rules = call(second, "GET", "/v3/{p}/vpc/traffic-mirror-filter-rules").json()
    assert len(rules["traffic_mirror_filter_rules"]) == 1


def test_sigkill_loses_no_acknowledged_write(
    tmp_path: Path, api_server_factory: Callable[..., Server]
) -> None:
    server = api_server_factory(tmp_path / "k")
    acknowledged: list[str] = []
    stop = threading.Event()

    def writer(worker: int) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            try:
                answer = call(
                    server,
                    "POST",
                    "/v3/{p}/vpc/traffic-mirror-filters",
                    {"traffic_mirror_filter": {"name": f"w{worker}-{n}"}},
                )
            except httpx.TransportError:
                return  # the server died mid-request: not acknowledged
            if answer.status_code == 201:
                acknowledged.append(answer.json()["traffic_mirror_filter"]["id"])

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    try:
        for thread in threads:
            thread.start()
        while len(acknowledged) < 80:
            threading.Event().wait(0.01)
        server.kill()  # SIGKILL while writes are in flight
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        server.stop()
    restarted = api_server_factory(
        tmp_path / "k2", db_url=server.db_url, credentials_path=server.credentials_path
    )
    try:
        stored: set[str] = set()
        marker = ""
        while True:
            page = call(
                restarted, "GET", f"/v3/{{p}}/vpc/traffic-mirror-filters?limit=500&marker={marker}"
            ).json()
            stored |= {f["id"] for f in page["traffic_mirror_filters"]}
            if "next_marker" not in page["page_info"]:
                break
            marker = page["page_info"]["next_marker"]
        missing = set(acknowledged) - stored
        assert not missing, f"{len(missing)} acknowledged writes lost"
        assert len(acknowledged) >= 80
    finally:
        restarted.stop()


def test_session_walk_across_servers(two_servers: tuple[Server, Server]) -> None:
    """Every session write through one server, each result read through the other."""
    first, second = two_servers
    filter_id, target, sources = setup_world(first, 3, "walk")
    created = call(
        first,
        "POST",
        "/v3/{p}/vpc/traffic-mirror-sessions",
        session(filter_id, target, sources[:1], 5),
    )
    assert created.status_code == 201, created.text
    session_id = created.json()["traffic_mirror_session"]["id"]
    path = f"/v3/{{p}}/vpc/traffic-mirror-sessions/{session_id}"
    updated = call(
        second, "PUT", path, {"traffic_mirror_session": {"priority": "9", "enabled": "false"}}
    )
    assert updated.status_code == 200, updated.text
    added = call(
        first,
        "PUT",
        f"{path}/add-sources",
        {"traffic_mirror_session": {"traffic_mirror_sources": sources[1:]}},
    )
    assert added.json()["traffic_mirror_session"]["traffic_mirror_sources"] == sources
    # The priority change cascaded to the sources: a new session on a shared source may not
    # take priority 9, but may take the old 5.
    clash = call(
        second,
        "POST",
        "/v3/{p}/vpc/traffic-mirror-sessions",
        session(filter_id, target, sources[2:], 9),
    )
    assert clash.status_code == 409
    assert (
        call(
            second,
            "POST",
            "/v3/{p}/vpc/traffic-mirror-sessions",
            session(filter_id, target, sources[2:], 5),
        ).status_code
        == 201
    )
    shown = call(second, "GET", path).json()["traffic_mirror_session"]
    assert (shown["priority"], shown["enabled"], shown["traffic_mirror_sources"]) == (
        9,
        False,
        sources,
    )
    removed = call(
        second,
        "PUT",
        f"{path}/remove-sources",
        {"traffic_mirror_session": {"traffic_mirror_sources": sources}},
    )
    assert removed.json()["traffic_mirror_session"]["traffic_mirror_sources"] == []
    assert call(first, "DELETE", path).status_code == 204
    assert call(second, "GET", path).status_code == 404
    # NUL cannot be stored or compared by PostgreSQL: it is bad input on both databases.
    for method, nul_path, body in [
        ("GET", "/v3/{p}/vpc/traffic-mirror-filters/a%00b", None),
        ("GET", "/v3/{p}/vpc/traffic-mirror-sessions?name=a%00b", None),
        (
            "POST",
            "/v3/{p}/vpc/traffic-mirror-filters",
            {"traffic_mirror_filter": {"name": "n", "description": "a\u0000b"}},
        ),
    ]:
        answer = call(first, method, nul_path, body)
        assert answer.status_code in (400, 404), answer.text
