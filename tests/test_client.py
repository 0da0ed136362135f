"""VxtapClient against a real `vxtap server` (the `api_server` fixture), plus its signing
checked by the server's own verifier."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from vxtap import auth
from vxtap.client import ApiError, ServerUnreachable, VxtapClient
from vxtap.model import Counter, Interface


@pytest.fixture
def client(api_server: Any) -> Iterator[VxtapClient]:
    with VxtapClient(api_server.endpoint, api_server.ak, api_server.sk, api_server.project_id) as c:
        yield c


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- without a server ---------------------------------------------------------------


def test_every_request_carries_a_signature_the_server_verifier_accepts() -> None:
    credential = auth.Credential("AK-1", "SK-1", "project-1")
    seen: list[str] = []

    def verifying_server(request: httpx.Request) -> httpx.Response:
        headers = {k.lower(): v for k, v in request.headers.items()}
        signer = auth.verify(
            request.method,
            request.url.path,
            request.url.query.decode(),
            headers,
            request.content,
            {credential.ak: credential}.get,
        )
        assert signer == credential
        seen.append(f"{request.method} {request.url.path}")
        answer = {"traffic_mirror_filters": [], "page_info": {}, "traffic_mirror_filter": {}}
        return httpx.Response(200, json=answer)

    with VxtapClient(
        "http://vxtap.test:9696",
        "AK-1",
        "SK-1",
        "project-1",
        transport=httpx.MockTransport(verifying_server),
    ) as c:
        # A query with blanks, '+', '/', non-ASCII and a bool, and a body with non-ASCII.
        c.list_filters(limit=5, where={"name": "a b+c/ü", "enabled": True})
        c.update_filter("id-1", name="名字", description="x y")
    assert seen == [
        "GET /v3/project-1/vpc/traffic-mirror-filters",
        "PUT /v3/project-1/vpc/traffic-mirror-filters/id-1",
    ]


def test_a_wrong_secret_is_refused_by_the_verifier() -> None:
    credential = auth.Credential("AK-1", "SK-1", "project-1")

    def verifying_server(request: httpx.Request) -> httpx.Response:
        headers = {k.lower(): v for k, v in request.headers.items()}
        auth.verify(
            request.method,
            request.url.path,
            request.url.query.decode(),
            headers,
            request.content,
            {credential.ak: credential}.get,
        )
        return httpx.Response(204)

    transport = httpx.MockTransport(verifying_server)
    with (
        VxtapClient("http://x", "AK-1", "wrong", "project-1", transport=transport) as c,
        pytest.raises(auth.AuthError, match="signature does not match"),
    ):
        c.delete_filter("f")


def test_unreachable_endpoint_raises_server_unreachable() -> None:
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    with (
        VxtapClient(endpoint, "ak", "sk", "p", timeout=2) as c,
        pytest.raises(ServerUnreachable) as raised,
    ):
        c.list_sessions()
    assert endpoint in str(raised.value)


def test_an_answer_not_in_huaweis_error_shape_still_becomes_api_error() -> None:
    transport = httpx.MockTransport(lambda r: httpx.Response(502, text="Bad Gateway\n<html>"))
    with (
        VxtapClient("http://x", "ak", "sk", "p", transport=transport) as c,
        pytest.raises(ApiError) as raised,
    ):
        c.show_session("s")
    assert (raised.value.status, raised.value.error_code) == (502, "HTTP.502")
    assert raised.value.error_msg == "Bad Gateway"


# --- against vxtap server -------------------------------------------------------------


def _two_ports(client: VxtapClient, tag: str) -> tuple[str, str]:
    source = client.create_port(f"{tag}-src", "eth0", ipv4=["192.168.0.230"])
    target = client.create_port(f"{tag}-tgt", "eth0", ipv4=["192.168.0.164"])
    return source.id, target.id


def test_filter_rule_session_lifecycle(client: VxtapClient) -> None:
    created = client.create_filter("seed-filter", "inbound TCP 1234")
    assert created["name"] == "seed-filter"
    assert created["ingress_rules"] == [] and created["egress_rules"] == []

    rule = client.create_rule(
        created["id"],
        direction="ingress",
        priority=1,
        protocol="tcp",
        ethertype="ipv4",
        source_cidr_block="192.168.0.161/32",
        destination_cidr_block="192.168.0.230/32",
        destination_port_range="1234-1234",
    )
    assert (rule["protocol"], rule["ethertype"], rule["action"]) == ("TCP", "IPv4", "accept")
    assert "source_port_range" not in rule
    assert client.show_rule(rule["id"]) == rule
    assert client.update_rule(rule["id"], priority=7)["priority"] == 7
    assert [r["id"] for r in client.show_filter(created["id"])["ingress_rules"]] == [rule["id"]]

    source, target = _two_ports(client, "life")
    session = client.create_session(
        "seed-session", filter_id=created["id"], sources=[source], target_id=target, priority=1
    )
    assert (session["virtual_network_id"], session["packet_length"], session["enabled"]) == (
        1,
        96,
        True,
    )
    assert session["traffic_mirror_sources"] == [source]
    updated = client.update_session(session["id"], enabled=False, virtual_network_id=42)
    assert (updated["enabled"], updated["virtual_network_id"]) == (False, 42)

    other = client.create_port("life-src", "eth1", ipv4=["192.168.0.231"]).id
    assert client.add_sources(session["id"], [other])["traffic_mirror_sources"] == [source, other]
    assert client.remove_sources(session["id"], [source])["traffic_mirror_sources"] == [other]

    with pytest.raises(ApiError) as in_use:
        client.delete_filter(created["id"])
    assert in_use.value.status == 409 and in_use.value.error_code.startswith("VPC.")

    client.delete_session(session["id"])
    client.delete_rule(rule["id"])
    client.delete_filter(created["id"])
    for show in (client.show_session, client.show_rule, client.show_filter):
        with pytest.raises(ApiError) as gone:
            show("00000000-0000-0000-0000-000000000000")
        assert gone.value.status == 404


def test_refused_request_carries_status_code_and_message(client: VxtapClient) -> None:
    item = client.create_filter("f-bad")
    with pytest.raises(ApiError) as raised:
        client.create_rule(
            item["id"],
            direction="ingress",
            priority=1,
            protocol="TCP",
            source_cidr_block="10.0.0.0/33",
        )
    error = raised.value
    assert error.status == 400
    assert error.error_code.startswith("VPC.")
    assert "source_cidr_block" in error.error_msg
    assert str(error) == f"{error.error_code}: {error.error_msg}"
    assert client.list_rules(where={"traffic_mirror_filter_id": item["id"]}).items == []


def test_pages_and_the_iterator_over_all_pages(client: VxtapClient) -> None:
    ids = [client.create_filter(f"page-{i}")["id"] for i in range(5)]
    first = client.list_filters(limit=2)
    assert len(first.items) == 2 and first.current_count == 2
    assert first.previous_marker == first.items[0]["id"]
    assert first.next_marker == first.items[-1]["id"]
    rest = client.list_filters(marker=first.next_marker)
    assert rest.next_marker is None
    everything = [f["id"] for f in client.iter_filters(page_size=2)]
    assert everything == [f["id"] for f in first.items + rest.items]
    assert sorted(everything) == sorted(ids)
    only = client.list_filters(where={"name": "page-3"}).items
    assert [f["id"] for f in only] == [ids[3]]


def test_agent_calls_register_state_and_counters(client: VxtapClient) -> None:
    interfaces = [
        Interface(device="eth0", mac="fa:16:3e:7e:d6:bc", ipv4=("192.168.0.230",)),
        Interface(device="eth1", ipv6=("fd00::1",)),
    ]
    ports = client.register_ports("ecs-source", interfaces)
    assert {p.device for p in ports} == {"eth0", "eth1"}
    again = client.register_ports("ecs-source", interfaces[:1])
    assert {p.id for p in again} <= {p.id for p in ports}
    eth0 = next(p for p in ports if p.device == "eth0")
    target = client.create_port("ecs-target", "eth0", ipv4=["192.168.0.164"])

    item = client.create_filter("agent-filter")
    client.create_rule(item["id"], direction="ingress", priority=1, protocol="TCP")
    session = client.create_session(
        "agent-session", filter_id=item["id"], sources=[eth0.id], target_id=target.id, priority=3
    )
    state = client.desired_state("ecs-source")
    assert state.host == "ecs-source"
    assert [s.id for s in state.sessions] == [session["id"]]
    assert [t.id for t in state.targets] == [target.id]
    assert client.desired_state("ecs-target").sessions == ()
    # Conditional: None while the revision is unchanged, the new state once it changes.
    assert client.desired_state("ecs-source", if_none_match=state.revision) is None
    assert client.desired_state("ecs-source", if_none_match="older") == state
    client.update_session(session["id"], enabled=False)
    changed = client.desired_state("ecs-source", if_none_match=state.revision)
    assert changed is not None and changed.revision != state.revision
    assert changed.sessions[0].enabled is False
    # With the ETag: the tag carries the change counter; unchanged -> no state, same tag.
    first = client.fetch_desired_state("ecs-source")
    assert first.state == changed and first.etag is not None
    assert first.etag.endswith(f"-{changed.revision}")
    again = client.fetch_desired_state("ecs-source", if_none_match=first.etag)
    assert again.state is None and again.etag == first.etag

    client.report_counters("ecs-source", {session["id"]: Counter(packets=3, bytes=300)}, {})
    stats = client.session_stats()
    assert stats.sessions[session["id"]] == Counter(packets=3, bytes=300)
    assert "ecs-source" in stats.hosts

    listed = {p["id"]: p for p in client.iter_ports()}
    assert listed[eth0.id]["binding:host_id"] == "ecs-source"
    assert listed[eth0.id]["name"] == "eth0"
    assert client.show_port(target.id)["id"] == target.id

    with pytest.raises(ApiError) as in_use:
        client.delete_port(target.id)
    assert in_use.value.status == 409
    client.delete_session(session["id"])
    client.delete_port(target.id)
    with pytest.raises(ApiError) as gone:
        client.show_port(target.id)
    assert gone.value.status == 404


def test_wrong_secret_is_refused_by_the_server(api_server: Any) -> None:
    with (
        VxtapClient(api_server.endpoint, api_server.ak, "wrong", api_server.project_id) as c,
        pytest.raises(ApiError) as raised,
    ):
        c.list_filters()
    assert raised.value.status == 401
