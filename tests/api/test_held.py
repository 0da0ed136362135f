"""Held desired-state requests against real `vxtap server` processes (SQLite, and two servers
on one real PostgreSQL)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from starlette.testclient import TestClient

from support.api import ApiServer, unique
from vxtap import auth
from vxtap.api.app import create_app
from vxtap.auth import sign
from vxtap.client import ApiError, Fetched, VxtapClient
from vxtap.store import common
from vxtap.store import hosts as host_store
from vxtap.store.db import Store


@dataclass
class Hosts:
    """Two hosts, A and B, each the source of its own session."""

    a: str
    b: str
    session_a: str
    session_b: str


def client(server: ApiServer) -> VxtapClient:
    return VxtapClient(server.endpoint, server.ak, server.sk, server.project_id, timeout=5)


def two_hosts(server: ApiServer) -> Hosts:
    a, b = unique("host-a"), unique("host-b")
    with client(server) as c:
        target = c.create_port(unique("collector"), "eth0", ipv4=["10.9.0.1"])
        flt = c.create_filter("all")
        c.create_rule(flt["id"], direction="ingress", priority=1, protocol="UDP")
        sessions = []
        for host, vni in ((a, 1), (b, 2)):
            source = c.create_port(host, "eth0", ipv4=[f"10.0.{vni}.1"])
            sessions.append(
                c.create_session(
                    unique("s"), filter_id=flt["id"], sources=[source.id],
                    target_id=target.id, priority=1, virtual_network_id=vni,
                )["id"]
            )  # fmt: skip
    return Hosts(a, b, sessions[0], sessions[1])


class Held:
    """A held request on a thread: `.answer` and `.took` once it returns."""

    def __init__(self, server: ApiServer, host: str, tag: str, wait: float) -> None:
        self.answer: Fetched | None = None
        self.error: Exception | None = None
        self.took = 0.0
        self.returned_at = 0.0
        self.started = time.monotonic()

        def run() -> None:
            try:
                with client(server) as c:
                    self.answer = c.fetch_desired_state(host, if_none_match=tag, wait=wait)
            except Exception as error:
                self.error = error
            self.returned_at = time.monotonic()
            self.took = self.returned_at - self.started

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def result(self, timeout: float = 60) -> Fetched:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the held request never returned"
        assert self.error is None, self.error
        assert self.answer is not None
        return self.answer

    @property
    def done(self) -> bool:
        return not self.thread.is_alive()


def tag_of(server: ApiServer, host: str) -> str:
    with client(server) as c:
        etag = c.fetch_desired_state(host).etag
    assert etag is not None
    return etag


def until(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.fixture
def server(tmp_path: Path, api_server_factory: Callable[..., ApiServer]) -> Iterator[ApiServer]:
    started = api_server_factory(tmp_path / "sqlite")
    try:
        yield started
    finally:
        started.stop()


def test_a_change_answers_that_hosts_held_request_only(server: ApiServer) -> None:
    hosts = two_hosts(server)
    tag_a, tag_b = tag_of(server, hosts.a), tag_of(server, hosts.b)
    held_a = Held(server, hosts.a, tag_a, wait=30)
    held_b = Held(server, hosts.b, tag_b, wait=4)
    time.sleep(0.5)  # both are held now
    assert not held_a.done and not held_b.done
    with client(server) as c:
        c.update_session(hosts.session_a, enabled=False)
        changed_at = time.monotonic()
    answer = held_a.result()
    print(
        f"held request answered {(held_a.returned_at - changed_at) * 1000:.0f} ms after the change"
    )
    assert answer.state is not None and answer.state.sessions[0].enabled is False
    assert answer.etag != tag_a
    assert not held_b.done  # host B's state did not change: still held
    unchanged = held_b.result()
    assert unchanged.state is None and unchanged.etag == tag_b  # 304 after the wait
    assert held_b.took >= 4.0


def test_a_request_that_differs_is_answered_at_once_and_old_tags_still_work(
    server: ApiServer,
) -> None:
    hosts = two_hosts(server)
    tag_a = tag_of(server, hosts.a)
    with client(server) as c:
        c.update_session(hosts.session_a, virtual_network_id=99)
        started = time.monotonic()
        answer = c.fetch_desired_state(hosts.a, if_none_match=tag_a, wait=30)
        took = time.monotonic() - started
        assert answer.state is not None and answer.state.sessions[0].vni == 99
        assert took < 30  # not held: it already differed
        # An agent after a restart (bare content revision) or an older server's tag
        # ("<project counter>-<revision>"): held when the content is the same.
        revision = answer.state.revision
        for old_tag in (revision, f"12345-{revision}"):
            started = time.monotonic()
            held = c.fetch_desired_state(hosts.a, if_none_match=old_tag, wait=1.5)
            assert held.state is None and held.etag == answer.etag
            assert time.monotonic() - started >= 1.5
        # Without `wait`, as before: 304 at once.
        assert c.fetch_desired_state(hosts.a, if_none_match=answer.etag).state is None


def test_wait_is_bounded_and_checked(server: ApiServer) -> None:
    hosts = two_hosts(server)
    with client(server) as c:
        for bad in ("-1", "1e9", "soon"):
            response = c._http.get(
                f"/internal/v1/{server.project_id}/hosts/{hosts.a}/desired-state",
                params={"wait": bad},
            )
            assert response.status_code == 400, bad
            assert "wait" in response.json()["error_msg"]


# --- several server processes on one PostgreSQL -------------------------------------------


@pytest.fixture
def two_servers(
    tmp_path: Path, pg_db: str, api_server_factory: Callable[..., ApiServer]
) -> Iterator[tuple[ApiServer, ApiServer]]:
    first = api_server_factory(tmp_path / "one", db_url=pg_db)
    second = None
    try:
        second = api_server_factory(
            tmp_path / "two", db_url=pg_db, credentials_path=first.credentials_path
        )
        yield first, second
    finally:
        for started in (first, second):
            if started is not None:
                started.stop()


def _listeners(pg_db: str) -> list[int]:
    from sqlalchemy.engine import make_url

    url = make_url(pg_db)
    with psycopg.connect(
        host=url.query["host"], user="postgres", dbname=url.database, autocommit=True
    ) as connection:
        rows = connection.execute(
            "SELECT pid FROM pg_stat_activity WHERE query LIKE 'LISTEN%%' AND datname = %s",
            (url.database,),
        ).fetchall()
    return [int(row[0]) for row in rows]


def _terminate(pg_db: str, pids: list[int]) -> None:
    from sqlalchemy.engine import make_url

    url = make_url(pg_db)
    with psycopg.connect(
        host=url.query["host"], user="postgres", dbname=url.database, autocommit=True
    ) as connection:
        for pid in pids:
            connection.execute("SELECT pg_terminate_backend(%s)", (pid,))


def test_a_change_through_one_server_answers_a_request_held_on_another(
    two_servers: tuple[ApiServer, ApiServer], pg_db: str
) -> None:
    first, second = two_servers
    hosts = two_hosts(first)
    until(lambda: len(_listeners(pg_db)) == 2, 30)  # one listening connection per process
    tag_a, tag_b = tag_of(second, hosts.a), tag_of(second, hosts.b)
    took: list[float] = []
    for enabled in (False, True, False):
        held_a = Held(second, hosts.a, tag_a, wait=30)
        held_b = Held(second, hosts.b, tag_b, wait=30)
        time.sleep(0.5)
        with client(first) as c:
            c.update_session(hosts.session_a, enabled=enabled)
            changed_at = time.monotonic()
        answer = held_a.result()
        took.append(held_a.returned_at - changed_at)
        assert answer.state is not None and answer.state.sessions[0].enabled is enabled
        tag_a = answer.etag or tag_a
        assert not held_b.done  # B is not woken by A's change
    print(
        "server 1 write -> server 2 held answer: " + ", ".join(f"{t * 1000:.0f} ms" for t in took)
    )
    assert max(took) < 1.0
    assert len(_listeners(pg_db)) == 2  # still one per process, not one per held request


def test_a_dropped_listen_connection_or_a_restart_loses_no_change(
    two_servers: tuple[ApiServer, ApiServer],
    pg_db: str,
    api_server_factory: Callable[..., ApiServer],
    tmp_path: Path,
) -> None:
    first, second = two_servers
    hosts = two_hosts(first)
    until(lambda: len(_listeners(pg_db)) == 2, 30)
    tag_a = tag_of(second, hosts.a)
    # Drop every listening connection, then change while nobody listens.
    _terminate(pg_db, _listeners(pg_db))
    held = Held(second, hosts.a, tag_a, wait=30)
    with client(first) as c:
        c.update_session(hosts.session_a, enabled=False)
        changed_at = time.monotonic()
    answer = held.result()
    print(
        f"with the LISTEN connection dropped: answered after {held.returned_at - changed_at:.2f} s"
    )
    assert answer.state is not None and answer.state.sessions[0].enabled is False
    assert held.returned_at - changed_at < 10  # the periodic re-check, not the 30 s wait
    until(lambda: len(_listeners(pg_db)) == 2, 30)  # both listen again
    # A change while the agent's server is down is seen when it asks again.
    tag_a = answer.etag or tag_a
    second.kill()
    with client(first) as c:
        c.update_session(hosts.session_a, enabled=True)
    restarted = api_server_factory(
        tmp_path / "restarted", db_url=pg_db, credentials_path=first.credentials_path
    )
    try:
        with client(restarted) as c:
            again = c.fetch_desired_state(hosts.a, if_none_match=tag_a, wait=30)
        assert again.state is not None and again.state.sessions[0].enabled is True
    finally:
        restarted.stop()


def test_the_fleet_view_shows_which_hosts_have_a_request_held_here(server: ApiServer) -> None:
    hosts = two_hosts(server)
    with client(server) as c:
        c.enrol_host(hosts.a)
        c.enrol_host(hosts.b)
        assert c.show_host(hosts.a)["held_request"] is False
        held = Held(server, hosts.a, tag_of(server, hosts.a), wait=3)
        until(lambda: c.show_host(hosts.a)["held_request"] is True, 10)
        listed = {h["host"]: h["held_request"] for h in c.list_hosts()}
        assert (listed[hosts.a], listed[hosts.b]) == (True, False)
        assert held.result().state is None  # 304 after the wait
        assert c.show_host(hosts.a)["held_request"] is False


def test_revoking_a_host_ends_its_held_request_at_once(server: ApiServer) -> None:
    hosts = two_hosts(server)
    with client(server) as c:
        credential, _ = c.enrol_host(hosts.a)
    tag = tag_of(server, hosts.a)
    answer: list[Exception | Fetched] = []

    def hold() -> None:
        with VxtapClient(
            server.endpoint, credential["ak"], credential["sk"], server.project_id, timeout=5
        ) as agent:
            try:
                answer.append(agent.fetch_desired_state(hosts.a, if_none_match=tag, wait=60))
            except Exception as error:
                answer.append(error)

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    with client(server) as c:
        until(lambda: c.show_host(hosts.a)["held_request"] is True, 10)
        c.revoke_host(hosts.a)
    thread.join(20)  # well before the 60 s wait: the revocation answered it
    assert not thread.is_alive(), "the revoked host's held request was not ended"
    assert isinstance(answer[0], ApiError) and answer[0].status == 401, answer


def test_an_unchanged_renewal_reads_nothing_and_a_revoked_key_is_still_refused_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An idle agent's renewal is answered from what the server process knows (the host's
    revision, the agent's key): no database read. What the server knows moves with every
    write, so a change is still answered with the new state, and revoking the key
    refuses it at once. (In process, to count the reads.)"""
    store = Store(f"sqlite:///{tmp_path / 'vxtap.db'}")
    store.upgrade()
    admin = auth.Credential("admin-ak", "admin-sk-" + "x" * 24, "p1")
    app = create_app(store, {admin.ak: admin}, agent_signing_key=b"k" * 32)
    reads: list[str] = []
    for module, name in ((common, "host_revision"), (host_store, "agent_by_access_key")):
        original = getattr(module, name)

        def counted(*args: object, _original: Any = original, _name: str = name) -> object:
            reads.append(_name)
            return _original(*args)

        monkeypatch.setattr(module, name, counted)

    def send(
        client: TestClient, key: auth.Credential, method: str, path: str, **kw: Any
    ) -> httpx.Response:
        body = json.dumps(kw.pop("json")).encode() if "json" in kw else b""
        headers = {"Content-Type": "application/json", **kw.pop("headers", {})}
        url = f"http://testserver{path}"
        headers.update(sign(method, url, headers, body, key.ak, key.sk, key.project_id))
        return client.request(method, url, content=body, headers=headers)

    with TestClient(app) as c:
        enrolled = send(c, admin, "POST", "/internal/v1/p1/hosts", json={"host": "web-1"})
        assert enrolled.status_code == 201, enrolled.text
        key = auth.Credential(**enrolled.json()["credential"])
        path = "/internal/v1/p1/hosts/web-1/desired-state"
        first = send(c, key, "GET", path)
        assert first.status_code == 200
        tag = first.headers["etag"]
        reads.clear()
        for _ in range(3):
            renewal = send(c, key, "GET", f"{path}?wait=0.05", headers={"If-None-Match": tag})
            assert (renewal.status_code, renewal.headers["etag"]) == (304, tag)
        assert reads == []
        # Another host's change moves the project's counter; the periodic look that sees
        # it re-reads the revisions, and the unchanged host still renews without reading
        # its revision.
        other = send(c, admin, "POST", "/internal/v1/p1/hosts", json={"host": "web-2"})
        assert other.status_code == 201
        assert send(c, admin, "DELETE", "/internal/v1/p1/hosts/web-2").status_code == 204
        held = app.state.held
        with store.read_rows() as db:
            counter = common.change_counter(db, "p1")
        deadline = time.monotonic() + 30
        while held.counters.get("p1") != counter or held.dirty:
            assert time.monotonic() < deadline, "no periodic look"
            time.sleep(0.05)
        time.sleep(0.2)  # the re-read it started
        reads.clear()
        for _ in range(2):  # the key is looked up again once (a project-wide re-read)
            renewal = send(c, key, "GET", f"{path}?wait=0.05", headers={"If-None-Match": tag})
            assert renewal.status_code == 304
        assert reads == ["agent_by_access_key"]
        # The host's ports change: the next renewal gets the new state.
        ports = [{"device": "eth0", "ipv4": ["10.0.0.1"], "ipv6": []}]
        put = send(c, key, "PUT", "/internal/v1/p1/hosts/web-1/ports", json={"ports": ports})
        assert put.status_code == 200, put.text
        changed = send(c, key, "GET", f"{path}?wait=5", headers={"If-None-Match": tag})
        assert changed.status_code == 200
        assert [p["device"] for p in changed.json()["ports"]] == ["eth0"]
        # Revoked: refused at once, the renewal and any request.
        assert send(c, admin, "DELETE", "/internal/v1/p1/hosts/web-1").status_code == 204
        tag = changed.headers["etag"]
        refused = send(c, key, "GET", f"{path}?wait=5", headers={"If-None-Match": tag})
        assert refused.status_code == 401
        assert "unknown access key" in refused.json()["error_msg"]
    store.dispose()
