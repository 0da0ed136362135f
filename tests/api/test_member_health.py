"""Target-group member health against real `vxtap server` processes (SQLite, and two
servers on one PostgreSQL): collector heartbeats, silence, recovery, the held requests
they answer, who may beat, hostile bodies; member counters (docs/elb.md)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.api import ApiServer, snapshot, unique
from support.servers import free_port, server_pair
from vxtap.auth import sign
from vxtap.client import ApiError, VxtapClient
from vxtap.model import DesiredState

# Generous bounds: the server marks a member down 1.5 s after its last beat and looks
# every 0.25 s; nothing here measures how fast, only that it happens.
DOWN_WITHIN_S = 15.0


def admin(server: ApiServer) -> VxtapClient:
    return VxtapClient(server.endpoint, server.ak, server.sk, server.project_id, timeout=10)


@dataclass
class Group:
    """A source host with an `elb` session to a group of two collector ports on host
    `collector` (devices eth1, eth2) whose agent key is `key`."""

    server: ApiServer
    source_host: str
    session_id: str
    group_id: str
    collector: str
    members: dict[str, str]  # device -> port id
    key: dict[str, Any]  # the collector host's agent credential

    def agent(self) -> VxtapClient:
        return VxtapClient(
            self.server.endpoint, self.key["ak"], self.key["sk"], self.key["project_id"],
            timeout=10,
        )  # fmt: skip

    def beat(self, devices: list[str] | None = None) -> None:
        with self.agent() as c:
            c.collector_heartbeat(self.collector, devices)

    def state(self) -> DesiredState:
        with admin(self.server) as c:
            return c.desired_state(self.source_host)

    def health(self) -> dict[str, bool]:
        """device -> healthy, as the source host's agent is told."""
        (group,) = [g for g in self.state().groups if g.id == self.group_id]
        by_port = {m.port_id: m.healthy for m in group.members}
        return {device: by_port[port] for device, port in self.members.items()}


def make_group(server: ApiServer, c: VxtapClient, name: str, port_ids: list[str]) -> str:
    """A target group of these ports (tg-resource's client method)."""
    group = c.create_target_group(name, ports=port_ids)
    return str(group["id"])


def setup_group(server: ApiServer, devices: tuple[str, ...] = ("eth1", "eth2")) -> Group:
    source_host, collector = unique("web"), unique("collector")
    with admin(server) as c:
        key, _ = c.enrol_host(collector)
        members = {
            device: c.create_port(collector, device, ipv4=[f"10.8.{n}.1"]).id
            for n, device in enumerate(devices, start=1)
        }
        group_id = make_group(server, c, unique("tg"), list(members.values()))
        flt = c.create_filter("all")
        c.create_rule(flt["id"], direction="ingress", priority=1, protocol="UDP")
        source = c.create_port(source_host, "eth0", ipv4=["10.7.0.1"])
        session = c.create_session(
            unique("s"), filter_id=flt["id"], sources=[source.id], target_id=group_id,
            target_type="elb", priority=1,
        )  # fmt: skip
    return Group(server, source_host, session["id"], group_id, collector, members, dict(key))


def until(condition: Callable[[], bool], timeout: float, what: str = "") -> float:
    """Poll until `condition`; the seconds it took."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, f"timed out: {what}"
        time.sleep(0.05)
    return time.monotonic() - started


def raw_put(
    server: ApiServer, path: str, body: bytes, *, ak: str, sk: str, project_id: str
) -> httpx.Response:
    url = f"{server.endpoint}{path}"
    headers = {"Content-Type": "application/json"}
    headers.update(sign("PUT", url, headers, body, ak, sk, project_id))
    return httpx.put(url, content=body, headers=headers, timeout=30)


@pytest.fixture
def server(tmp_path: Path, api_server_factory: Callable[..., ApiServer]) -> Iterator[ApiServer]:
    started = api_server_factory(tmp_path / "sqlite")
    try:
        yield started
    finally:
        started.stop()


def test_a_heartbeat_makes_members_healthy_silence_downs_them_and_they_recover(
    server: ApiServer,
) -> None:
    g = setup_group(server)
    assert g.health() == {"eth1": False, "eth2": False}  # never heard from
    g.beat(["eth1"])
    assert g.health() == {"eth1": True, "eth2": False}  # at once: the beat's answer
    g.beat()  # no devices: every port of the host
    assert g.health() == {"eth1": True, "eth2": True}
    # Beating keeps them up well past the silence limit.
    for _ in range(8):
        g.beat(["eth1", "eth2"])
        time.sleep(0.4)
    assert g.health() == {"eth1": True, "eth2": True}
    # eth2 falls silent; eth1 keeps beating.
    stop = time.monotonic() + DOWN_WITHIN_S
    while g.health()["eth2"]:
        assert time.monotonic() < stop, "a silent member was never marked down"
        g.beat(["eth1"])
        time.sleep(0.3)
    assert g.health() == {"eth1": True, "eth2": False}
    # Both silent: both down.
    until(lambda: g.health() == {"eth1": False, "eth2": False}, DOWN_WITHIN_S, "all down")
    # Recovery at the first beat.
    g.beat(["eth2"])
    assert g.health() == {"eth1": False, "eth2": True}


def test_a_health_change_answers_the_sources_held_request(server: ApiServer) -> None:
    g = setup_group(server)
    with admin(server) as c:
        tag = c.fetch_desired_state(g.source_host).etag
        assert tag is not None
        # Down -> up: the beat moves the source host's revision.
        started = time.monotonic()
        held: list[Any] = []

        def hold(tag: str) -> None:
            with admin(server) as h:
                held.append(h.fetch_desired_state(g.source_host, if_none_match=tag, wait=60))

        thread = threading.Thread(target=hold, args=(tag,), daemon=True)
        thread.start()
        time.sleep(0.5)  # let it be held
        g.beat()
        thread.join(30)
        assert not thread.is_alive(), "the held request was not answered"
        assert time.monotonic() - started < 30
        answer = held.pop()
        assert answer.state is not None
        healthy = {m.healthy for gr in answer.state.groups for m in gr.members}
        assert healthy == {True}
        # Up -> down, by the server's checker alone.
        tag = answer.etag
        thread = threading.Thread(target=hold, args=(tag,), daemon=True)
        thread.start()
        thread.join(60)
        assert not thread.is_alive(), "the held request was not answered on silence"
        answer = held.pop()
        assert answer.state is not None
        healthy = {m.healthy for gr in answer.state.groups for m in gr.members}
        assert healthy == {False}


def test_a_beat_that_changes_nothing_moves_no_revision(server: ApiServer) -> None:
    g = setup_group(server)
    g.beat()
    with admin(server) as c:
        tag = c.fetch_desired_state(g.source_host).etag
        for _ in range(3):
            g.beat()
        again = c.fetch_desired_state(g.source_host, if_none_match=tag)
    assert again.state is None and again.etag == tag  # 304: nothing moved


def test_an_agent_key_beats_for_its_own_host_only(server: ApiServer) -> None:
    g = setup_group(server)
    with g.agent() as agent:
        with pytest.raises(ApiError) as refused:
            agent.collector_heartbeat(g.source_host)
        assert refused.value.status == 403
        assert "may not act for host" in str(refused.value)
    other = VxtapClient(
        server.endpoint, server.other_ak, server.other_sk, server.other_project_id, timeout=10
    )
    with other:
        other.collector_heartbeat(g.collector)  # its own project: no such ports, no members
    assert g.health() == {"eth1": False, "eth2": False}
    with admin(server) as c:
        c.collector_heartbeat(g.collector, ["eth1"])  # an administrator may
    assert g.health() == {"eth1": True, "eth2": False}


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (b'{"devices": ["eth9"]}', 404, "eth9"),
        (b'{"devices": ["eth1", "nope0"]}', 404, "nope0"),
        (b'{"devices": []}', 400, "devices"),
        (b'{"devices": "eth1"}', 400, "devices"),
        (b'{"devices": ["eth1/../x"]}', 400, "devices"),
        (b'{"devices": ["' + b"a" * 16 + b'"]}', 400, "devices"),
        (b'{"devices": [' + b",".join([b'"eth1"'] * 1025) + b"]}", 400, "devices"),
        (b'{"device": ["eth1"]}', 400, "device"),
        (b"not json", 400, ""),
        (b'{"devices": ["' + b"x" * (1 << 20) + b'"]}', 400, "larger"),
    ],
    ids=[
        "unknown",
        "one-unknown",
        "empty",
        "not-a-list",
        "bad-name",
        "too-long",
        "too-many",
        "extra-field",
        "not-json",
        "huge",
    ],
)
def test_hostile_heartbeats_are_refused_and_change_nothing(
    server: ApiServer, body: bytes, status: int, words: str
) -> None:
    g = setup_group(server)
    before = snapshot(server.db_url)
    key = g.key
    path = f"/internal/v1/{key['project_id']}/hosts/{g.collector}/collector-heartbeat"
    answer = raw_put(server, path, body, ak=key["ak"], sk=key["sk"], project_id=key["project_id"])
    assert answer.status_code == status, answer.text
    assert words in answer.text
    assert snapshot(server.db_url) == before


def test_a_heartbeat_for_a_host_without_ports_is_accepted_and_stores_nothing(
    server: ApiServer,
) -> None:
    before = snapshot(server.db_url)
    with admin(server) as c:
        c.collector_heartbeat(unique("nobody"))
        with pytest.raises(ApiError) as refused:
            c.collector_heartbeat(unique("nobody"), ["eth0"])
        assert refused.value.status == 404
    assert snapshot(server.db_url) == before


def test_member_counters_are_kept_for_the_hosts_sessions_and_summed(server: ApiServer) -> None:
    g = setup_group(server)
    with admin(server) as c:
        second = c.create_port(unique("web"), "eth0", ipv4=["10.7.0.2"])
        c.add_sources(g.session_id, [second.id])
        other_session = c.create_session(
            unique("s"), filter_id=c.show_session(g.session_id)["traffic_mirror_filter_id"],
            sources=[c.create_port(unique("web"), "eth0", ipv4=["10.7.0.3"]).id],
            target_id=g.group_id, target_type="elb", priority=2,
        )["id"]  # fmt: skip
    eth1, eth2 = g.members["eth1"], g.members["eth2"]
    reports = {
        g.source_host: {
            f"{g.session_id}/{eth1}": {"packets": 3, "bytes": 300},
            f"{g.session_id}/{eth2}": {"packets": 1, "bytes": 100},
            f"{other_session}/{eth1}": {"packets": 7, "bytes": 700},  # not this host's
            f"{g.session_id}/{second.id}": {"packets": 9, "bytes": 900},  # not a member
        },
        second.host: {f"{g.session_id}/{eth1}": {"packets": 2, "bytes": 200}},
    }
    for host, members in reports.items():
        with admin(server) as c:
            path = f"/internal/v1/{server.project_id}/hosts/{host}/counters"
            answer = raw_put(
                server, path, json.dumps({"members": members}).encode(),
                ak=server.ak, sk=server.sk, project_id=server.project_id,
            )  # fmt: skip
            assert answer.status_code == 204, answer.text
    with admin(server) as c:
        stats = c.session_stats()
    assert stats.members == {
        f"{g.session_id}/{eth1}": stats.members[f"{g.session_id}/{eth1}"],
        f"{g.session_id}/{eth2}": stats.members[f"{g.session_id}/{eth2}"],
    }
    assert stats.members[f"{g.session_id}/{eth1}"].packets == 5
    assert stats.members[f"{g.session_id}/{eth1}"].bytes == 500
    assert stats.members[f"{g.session_id}/{eth2}"].packets == 1


@pytest.mark.parametrize(
    "members",
    [
        {"no-slash": {"packets": 1, "bytes": 1}},
        {"a/b/c": {"packets": 1, "bytes": 1}},
        {"x" * 37 + "/y": {"packets": 1, "bytes": 1}},
        {"a/b": {"packets": -1, "bytes": 1}},
    ],
)
def test_bad_member_counter_keys_are_refused(server: ApiServer, members: dict[str, Any]) -> None:
    path = f"/internal/v1/{server.project_id}/hosts/{unique('h')}/counters"
    answer = raw_put(
        server, path, json.dumps({"members": members}).encode(),
        ak=server.ak, sk=server.sk, project_id=server.project_id,
    )  # fmt: skip
    assert answer.status_code == 400, answer.text


# -- several server processes on one PostgreSQL ------------------------------------------


@pytest.fixture
def two_servers(tmp_path: Path, pg_db: str) -> Iterator[tuple[ApiServer, ApiServer]]:
    with server_pair(tmp_path, pg_db) as pair:
        yield pair


def test_postgresql_two_servers_share_health(two_servers: tuple[ApiServer, ApiServer]) -> None:
    first, second = two_servers
    g = setup_group(first)
    on_second = Group(**{**g.__dict__, "server": second})
    assert on_second.health() == {"eth1": False, "eth2": False}
    g.beat(["eth1"])  # through the first
    assert on_second.health() == {"eth1": True, "eth2": False}  # seen by the second
    on_second.beat(["eth2"])  # through the second
    assert g.health() == {"eth1": True, "eth2": True}
    # A request held on the second is answered when the checkers mark them down.
    with admin(second) as c:
        tag = c.fetch_desired_state(g.source_host).etag
        started = time.monotonic()
        answer = c.fetch_desired_state(g.source_host, if_none_match=tag, wait=60)
    assert time.monotonic() - started < 60 - 1
    assert answer.state is not None
    until(lambda: g.health() == {"eth1": False, "eth2": False}, DOWN_WITHIN_S, "all down")
    assert on_second.health() == {"eth1": False, "eth2": False}
    # Recovery through either.
    on_second.beat()
    assert g.health() == {"eth1": True, "eth2": True}


def test_postgresql_hostile_heartbeat_changes_nothing(
    two_servers: tuple[ApiServer, ApiServer], pg_db: str
) -> None:
    first, _ = two_servers
    g = setup_group(first)
    before = snapshot(pg_db)
    with g.agent() as agent, pytest.raises(ApiError) as refused:
        agent.collector_heartbeat(g.collector, ["eth1", "eth7"])
    assert refused.value.status == 404
    assert snapshot(pg_db) == before


# -- the collector's side, end to end -----------------------------------------------------


def test_vxtap_collect_beats_while_it_runs_and_stops_cleanly(
    server: ApiServer, tmp_path: Path
) -> None:
    g = setup_group(server, devices=("lo", "eth9"))
    credentials = tmp_path / "collector-credentials.json"
    credentials.write_text(json.dumps([g.key]))
    credentials.chmod(0o600)
    log = tmp_path / "collect.log"
    argv = [
        sys.executable, "-m", "vxtap", "collect", "--config", str(tmp_path / "none.toml"),
        "--listen", f"127.0.0.1:{free_port(socket.SOCK_DGRAM)}", "-i", "lo", "--quiet",
        "--endpoint", server.endpoint, "--credentials", str(credentials),
    ]  # fmt: skip
    (tmp_path / "none.toml").write_text("")
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        until(lambda: g.health() == {"lo": True, "eth9": False}, 60, "the collector's beats")
        # It keeps the member up while it runs.
        time.sleep(2.5)
        assert g.health() == {"lo": True, "eth9": False}
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    text = log.read_text()
    assert f"heartbeats to {server.endpoint} as host {g.collector} (lo)" in text
    assert "heartbeat failed" not in text
    until(lambda: g.health() == {"lo": False, "eth9": False}, DOWN_WITHIN_S, "down after stop")


def test_vxtap_collect_logs_a_refused_heartbeat_once_and_keeps_receiving(
    server: ApiServer, tmp_path: Path
) -> None:
    g = setup_group(server, devices=("eth1",))  # the collector receives on lo: no such port
    credentials = tmp_path / "collector-credentials.json"
    credentials.write_text(json.dumps([g.key]))
    credentials.chmod(0o600)
    log = tmp_path / "collect.log"
    (tmp_path / "none.toml").write_text("")
    argv = [
        sys.executable, "-m", "vxtap", "collect", "--config", str(tmp_path / "none.toml"),
        "--listen", f"127.0.0.1:{free_port(socket.SOCK_DGRAM)}", "-i", "lo", "--quiet",
        "--endpoint", server.endpoint, "--credentials", str(credentials),
    ]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        until(lambda: "heartbeat failed" in log.read_text(), 60, "the refusal logged")
        time.sleep(2)  # four more refused beats
        assert process.poll() is None, log.read_text()  # still receiving
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    text = log.read_text()
    assert text.count("heartbeat failed") == 1, text
    assert "'lo'" in text
    assert g.health() == {"eth1": False}


def test_target_group_show_gives_health_and_table_share(server: ApiServer) -> None:
    from click.testing import CliRunner

    from vxtap.cli import main

    g = setup_group(server)
    g.beat(["eth1"])
    env = {
        "VXTAP_ENDPOINT": server.endpoint, "VXTAP_AK": server.ak, "VXTAP_SK": server.sk,
        "VXTAP_PROJECT_ID": server.project_id, "COLUMNS": "200",
    }  # fmt: skip
    result = CliRunner().invoke(main, ["target-group", "show", g.group_id], env=env)
    assert result.exit_code == 0, result.output
    assert "SHARE" in result.output
    rows = [line for line in result.output.splitlines() if "eth1" in line or "eth2" in line]
    assert len(rows) == 2, result.output
    (up,) = [r for r in rows if "eth1" in r]
    (down,) = [r for r in rows if "eth2" in r]
    assert "yes" in up and "100.0%" in up
    assert "no" in down and "%" not in down
