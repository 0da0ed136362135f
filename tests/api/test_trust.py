"""Who may do what with which key (docs/security.md), against real server processes.

An agent key (enrolled with the API, or a `host` entry of the credentials file) may
register its own host's ports, read its own host's desired state, report its own
host's counters and status; everything else is 403 and changes nothing. A revoked
key is refused by every server process at once. Administrators keep every right.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from support.api import ApiServer, Raw, snapshot, unique
from vxtap import enrolment


def enrol(raw: Raw, host: str) -> dict[str, str]:
    answer = raw.internal("POST", "hosts", {"host": host})
    assert answer.status_code == 201, answer.text
    credential: dict[str, str] = answer.json()["credential"]
    assert credential["host"] == host
    return credential


def as_agent(raw: Raw, credential: dict[str, str]) -> Callable[..., Any]:
    def send(method: str, path: str, body: Any = None) -> Any:
        return raw.request(
            method, path, body, ak=credential["ak"], sk=credential["sk"],
            project_id=credential["project_id"],
        )  # fmt: skip

    return send


def deployment(raw: Raw, host: str, other_host: str) -> dict[str, str]:
    """A filter with a rule and a session from `host`'s port to `other_host`'s: what an
    agent key must not touch; ids so that refused requests would otherwise succeed."""
    agent = enrol(raw, host)
    registered = as_agent(raw, agent)(
        "PUT",
        f"/internal/v1/{raw.server.project_id}/hosts/{host}/ports",
        {"ports": [{"device": "eth0", "ipv4": ["10.9.0.1"]}]},
    )
    assert registered.status_code == 200, registered.text
    source = registered.json()["ports"][0]["id"]
    target = raw.internal(
        "POST", "ports", {"port": {"host": other_host, "device": "eth0", "ipv4": ["10.9.0.2"]}}
    ).json()["port"]["id"]
    filter_id = raw.v3("POST", "traffic-mirror-filters", {"traffic_mirror_filter": {"name": "f"}})
    filter_id = filter_id.json()["traffic_mirror_filter"]["id"]
    rule = raw.v3(
        "POST",
        "traffic-mirror-filter-rules",
        {
            "traffic_mirror_filter_rule": {
                "traffic_mirror_filter_id": filter_id, "direction": "ingress", "priority": 1,
                "protocol": "all", "ethertype": "IPv4", "action": "accept",
            }
        },
    )  # fmt: skip
    assert rule.status_code == 201, rule.text
    session = raw.v3(
        "POST",
        "traffic-mirror-sessions",
        {
            "traffic_mirror_session": {
                "name": "s", "traffic_mirror_filter_id": filter_id,
                "traffic_mirror_sources": [source], "traffic_mirror_target_id": target,
                "traffic_mirror_target_type": "eni", "priority": 1,
            }
        },
    )  # fmt: skip
    assert session.status_code == 201, session.text
    return {
        **agent,
        "source": source,
        "target": target,
        "filter": filter_id,
        "rule": rule.json()["traffic_mirror_filter_rule"]["id"],
        "session": session.json()["traffic_mirror_session"]["id"],
    }


def test_an_agent_key_serves_its_own_host_and_nothing_else(raw: Raw, server: ApiServer) -> None:
    host, other = unique("web"), unique("tap")
    ids = deployment(raw, host, other)
    agent = as_agent(raw, ids)
    p = server.project_id
    own = f"/internal/v1/{p}/hosts/{host}"
    counters = {"sessions": {ids["session"]: {"packets": 1, "bytes": 2}}, "rules": {}}
    status = {"agent_version": "0.1.0", "applied_revision": "abc", "drift_repairs": 0}
    # What an agent needs, for its own host: allowed.
    assert agent("GET", f"{own}/desired-state").status_code == 200
    assert agent("PUT", f"{own}/counters", counters).status_code == 204
    assert agent("PUT", f"{own}/status", status).status_code == 204
    ports = {"ports": [{"device": "eth0", "ipv4": ["10.9.0.1"]}]}
    assert agent("PUT", f"{own}/ports", ports).status_code == 200

    before = snapshot(server.db_url)
    v3 = f"/v3/{p}/vpc"
    f, r, s = ids["filter"], ids["rule"], ids["session"]
    sources = {"traffic_mirror_session": {"traffic_mirror_sources": [ids["source"]]}}
    refused = [
        # The 17 operations of the v3 API.
        ("POST", f"{v3}/traffic-mirror-filters", {"traffic_mirror_filter": {"name": "x"}}),
        ("GET", f"{v3}/traffic-mirror-filters", None),
        ("GET", f"{v3}/traffic-mirror-filters/{f}", None),
        ("PUT", f"{v3}/traffic-mirror-filters/{f}", {"traffic_mirror_filter": {"name": "y"}}),
        ("DELETE", f"{v3}/traffic-mirror-filters/{f}", None),
        ("POST", f"{v3}/traffic-mirror-filter-rules",
         {"traffic_mirror_filter_rule": {"traffic_mirror_filter_id": f, "direction": "egress",
                                         "priority": 2, "protocol": "all"}}),
        ("GET", f"{v3}/traffic-mirror-filter-rules", None),
        ("GET", f"{v3}/traffic-mirror-filter-rules/{r}", None),
        ("PUT", f"{v3}/traffic-mirror-filter-rules/{r}",
         {"traffic_mirror_filter_rule": {"priority": 9}}),
        ("DELETE", f"{v3}/traffic-mirror-filter-rules/{r}", None),
        ("POST", f"{v3}/traffic-mirror-sessions",
         {"traffic_mirror_session": {"name": "t", "traffic_mirror_filter_id": f,
                                     "traffic_mirror_sources": [ids["source"]],
                                     "traffic_mirror_target_id": ids["target"], "priority": 2}}),
        ("GET", f"{v3}/traffic-mirror-sessions", None),
        ("GET", f"{v3}/traffic-mirror-sessions/{s}", None),
        ("PUT", f"{v3}/traffic-mirror-sessions/{s}", {"traffic_mirror_session": {"name": "u"}}),
        ("PUT", f"{v3}/traffic-mirror-sessions/{s}/add-sources", sources),
        ("PUT", f"{v3}/traffic-mirror-sessions/{s}/remove-sources", sources),
        ("DELETE", f"{v3}/traffic-mirror-sessions/{s}", None),
        # v1 ports, manual ports, statistics, the fleet.
        ("GET", f"/v1/{p}/ports", None),
        ("GET", f"/v1/{p}/ports/{ids['source']}", None),
        ("POST", f"/internal/v1/{p}/ports",
         {"port": {"host": host, "device": "eth9", "ipv4": ["10.9.0.9"]}}),
        ("GET", f"/internal/v1/{p}/ports", None),
        ("GET", f"/internal/v1/{p}/ports/{ids['source']}", None),
        ("DELETE", f"/internal/v1/{p}/ports/{ids['target']}", None),
        ("GET", f"/internal/v1/{p}/session-stats", None),
        ("POST", f"/internal/v1/{p}/hosts", {"host": unique("new")}),
        ("GET", f"/internal/v1/{p}/hosts", None),
        ("GET", f"/internal/v1/{p}/hosts/{host}", None),
        ("DELETE", f"/internal/v1/{p}/hosts/{host}", None),
        ("DELETE", f"/internal/v1/{p}/hosts/{other}", None),
        # Another host's paths, the three of an agent and the status.
        ("PUT", f"/internal/v1/{p}/hosts/{other}/ports", ports),
        ("GET", f"/internal/v1/{p}/hosts/{other}/desired-state", None),
        ("PUT", f"/internal/v1/{p}/hosts/{other}/counters", counters),
        ("PUT", f"/internal/v1/{p}/hosts/{other}/status", status),
        # Its own host, but not an agent's operation on it.
        ("POST", f"{own}/ports", ports),
        ("DELETE", f"{own}/ports", None),
        ("PUT", f"{own}/desired-state", None),
    ]  # fmt: skip
    for method, path, body in refused:
        answer = agent(method, path, body)
        assert answer.status_code == 403, (method, path, answer.text)
        assert answer.json()["error_code"] == "VPC.0007", (method, path)
        assert f"host {host}'s agent key" in answer.json()["error_msg"]
    assert snapshot(server.db_url) == before
    # The administrator's key still does all of it.
    assert raw.v3("GET", f"traffic-mirror-sessions/{s}").status_code == 200
    assert raw.internal("GET", f"hosts/{other}/desired-state").status_code == 200
    assert raw.internal("PUT", f"hosts/{other}/counters", counters).status_code == 204
    assert raw.v3("DELETE", f"traffic-mirror-sessions/{s}").status_code == 204


def test_a_host_in_the_body_or_an_encoded_path_does_not_widen_an_agent_key(raw: Raw) -> None:
    host = unique("web")
    agent = as_agent(raw, enrol(raw, host))
    p = raw.server.project_id
    # The manual-port route takes the host from the body: refused outright.
    body = {"port": {"host": host, "device": "eth1", "ipv4": ["10.9.1.1"]}}
    assert agent("POST", f"/internal/v1/{p}/ports", body).status_code == 403
    for path in (
        f"/internal/v1/{p}/hosts/{host}%2F..%2Fother/desired-state",
        f"/internal/v1/{p}/hosts/{host}/../{unique('x')}/desired-state",
        f"/internal/v1/{p}/hosts/{host.upper()}/desired-state",
    ):
        answer = agent("GET", path)
        # (httpx resolves `..` before sending, so that one arrives unsigned: 401)
        assert answer.status_code in (401, 403, 404), (path, answer.text)


def test_a_revoked_host_is_refused_at_once(raw: Raw) -> None:
    host = unique("web")
    agent = as_agent(raw, enrol(raw, host))
    path = f"/internal/v1/{raw.server.project_id}/hosts/{host}/desired-state"
    assert agent("GET", path).status_code == 200
    assert raw.internal("DELETE", f"hosts/{host}").status_code == 204
    answer = agent("GET", path)
    assert answer.status_code == 401
    assert "unknown access key" in answer.json()["error_msg"]
    assert raw.internal("DELETE", f"hosts/{host}").status_code == 404
    # Enrolled again: a new key; the old one stays refused.
    again = enrol(raw, host)
    assert as_agent(raw, again)("GET", path).status_code == 200
    assert agent("GET", path).status_code == 401


def test_enrolment_refusals(raw: Raw) -> None:
    host = unique("web")
    enrol(raw, host)
    twice = raw.internal("POST", "hosts", {"host": host})
    assert twice.status_code == 409
    assert "enrolled already" in twice.json()["error_msg"]
    for bad in ({"host": "a/b"}, {"host": ""}, {}, {"host": "x", "extra": 1}):
        answer = raw.internal("POST", "hosts", bad)
        assert answer.status_code == 400, (bad, answer.text)
    assert raw.internal("DELETE", f"hosts/{unique('never')}").status_code == 404


def test_a_copy_of_the_database_holds_no_working_agent_secret(raw: Raw, server: ApiServer) -> None:
    host = unique("web")
    credential = enrol(raw, host)
    database = Path(server.db_url.removeprefix("sqlite:///"))
    with sqlite3.connect(database) as connection:
        connection.execute("PRAGMA wal_checkpoint(FULL)")
        rows = connection.execute("SELECT * FROM agent_hosts WHERE host = ?", (host,)).fetchall()
    assert len(rows) == 1
    assert credential["ak"] in rows[0]
    stored = b"".join(
        path.read_bytes() for path in database.parent.iterdir() if path.name.startswith("vxtap.db")
    )
    assert credential["ak"].encode() in stored
    assert credential["sk"].encode() not in stored
    # The secret comes from the signing key file next to the credentials file (mode 0600).
    key_file = server.credentials_path.with_name(enrolment.SIGNING_KEY_FILE)
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    key, _ = enrolment.load_signing_key(key_file, create=False)
    assert (
        enrolment.agent_secret(key, server.project_id, host, credential["ak"]) == (credential["sk"])
    )
    # ...and another key (a copy of the database elsewhere) derives a useless one.
    wrong = enrolment.agent_secret(os.urandom(32), server.project_id, host, credential["ak"])
    path = f"/internal/v1/{server.project_id}/hosts/{host}/desired-state"
    answer = raw.request("GET", path, ak=credential["ak"], sk=wrong)
    assert answer.status_code == 401


def test_host_entries_of_the_credentials_file_are_agent_keys(
    tmp_path: Path, api_server_factory: Callable[..., ApiServer]
) -> None:
    project = secrets.token_hex(16)
    admin = {
        "ak": "ADMIN" + secrets.token_hex(4),
        "sk": secrets.token_hex(16),
        "project_id": project,
    }
    agent_key = {**admin, "ak": "HOST" + secrets.token_hex(4), "host": "static-1"}
    other = {**admin, "ak": "OTHER" + secrets.token_hex(4), "project_id": secrets.token_hex(16)}
    path = tmp_path / "credentials.json"
    path.write_text(json.dumps([admin, other, agent_key]))
    path.chmod(0o600)
    server = api_server_factory(tmp_path / "s", credentials_path=path)
    try:
        raw = Raw(server)
        agent = as_agent(raw, agent_key)
        own = f"/internal/v1/{project}/hosts/static-1"
        assert agent("GET", f"{own}/desired-state").status_code == 200
        assert agent("GET", f"/internal/v1/{project}/hosts/other/desired-state").status_code == 403
        assert agent("GET", f"/v3/{project}/vpc/traffic-mirror-filters").status_code == 403
        listed = raw.internal("GET", "hosts").json()["hosts"]
        assert [(h["host"], h["enrolment"], h["access_key"]) for h in listed] == [
            ("static-1", "credentials file", agent_key["ak"])
        ]
        refused = raw.internal("DELETE", "hosts/static-1")
        assert refused.status_code == 409
        assert "credentials file" in refused.json()["error_msg"]
        assert raw.internal("POST", "hosts", {"host": "static-1"}).status_code == 409
    finally:
        server.stop()


def test_fleet_status_follows_what_agents_report(raw: Raw) -> None:
    host = unique("web")
    ids = deployment(raw, host, unique("tap"))
    agent = as_agent(raw, ids)
    own = f"/internal/v1/{raw.server.project_id}/hosts/{host}"

    def shown() -> dict[str, Any]:
        answer = raw.internal("GET", f"hosts/{host}")
        assert answer.status_code == 200, answer.text
        found: dict[str, Any] = answer.json()["host"]
        listed = [h for h in raw.internal("GET", "hosts").json()["hosts"] if h["host"] == host]
        assert listed == [found]
        return found

    first = shown()
    assert first["sync"] == "no report"
    assert first["enrolment"] == "api"
    assert first["held_request"] is False  # none held on this server
    desired = first["desired_revision"]
    assert desired == agent("GET", f"{own}/desired-state").json()["revision"]
    status = {"agent_version": "9.9", "applied_revision": desired, "drift_repairs": 2}
    assert agent("PUT", f"{own}/status", status).status_code == 204
    now = shown()
    assert (now["sync"], now["agent_version"], now["drift_repairs"]) == ("in sync", "9.9", 2)
    assert now["last_contact"] is not None
    # A change to the host's session: the agent is behind until it reports the new revision.
    changed = raw.v3(
        "PUT",
        f"traffic-mirror-sessions/{ids['session']}",
        {"traffic_mirror_session": {"priority": 7}},
    )
    assert changed.status_code == 200
    assert shown()["sync"] == "behind"
    failing = {**status, "apply_error": "revision x: nft: Could not process rule"}
    assert agent("PUT", f"{own}/status", failing).status_code == 204
    now = shown()
    assert now["sync"] == "failing"
    assert now["apply_error"] == "revision x: nft: Could not process rule"
    bad = agent("PUT", f"{own}/status", {**status, "drift_repairs": -1})
    assert bad.status_code == 400
    assert raw.internal("GET", f"hosts/{unique('none')}").status_code == 404


@pytest.mark.postgres
def test_a_revocation_holds_on_every_server_of_one_postgresql(
    tmp_path: Path, pg_db: str, api_server_factory: Callable[..., ApiServer]
) -> None:
    first = api_server_factory(tmp_path / "a", db_url=pg_db)
    second = api_server_factory(
        tmp_path / "b", db_url=pg_db, credentials_path=first.credentials_path
    )
    try:
        host = unique("web")
        credential = enrol(Raw(first), host)
        on_second = as_agent(Raw(second), credential)
        path = f"/internal/v1/{first.project_id}/hosts/{host}/desired-state"
        assert on_second("GET", path).status_code == 200
        assert Raw(first).internal("DELETE", f"hosts/{host}").status_code == 204
        assert on_second("GET", path).status_code == 401
        assert as_agent(Raw(first), credential)("GET", path).status_code == 401
    finally:
        second.stop()
        first.stop()


def test_an_unreadable_key_store_is_a_503_not_a_crash(api_server: ApiServer) -> None:
    raw = Raw(api_server)
    credential = enrol(raw, "web-1")
    database = api_server.db_url.removeprefix("sqlite:///")
    with sqlite3.connect(database) as connection:
        connection.execute("ALTER TABLE agent_hosts RENAME TO agent_hosts_away")
    path = f"/internal/v1/{api_server.project_id}/hosts/web-1/desired-state"
    answer = as_agent(raw, credential)("GET", path)
    assert answer.status_code == 503
    assert answer.json()["error_code"] == "VPC.0503"
    # Keys of the credentials file do not need the table: administrators keep working.
    assert raw.internal("GET", "hosts/web-1/desired-state").status_code == 200
    with sqlite3.connect(database) as connection:
        connection.execute("ALTER TABLE agent_hosts_away RENAME TO agent_hosts")
    assert as_agent(raw, credential)("GET", path).status_code == 200
