"""`VxtapClient`: a signed HTTP client for every API of `vxtap server`.

One method per operation: the 17 Huawei v3 traffic-mirror operations, the v1
ports, and the internal agent API. The CLI, the agent and `vxtap explain` all
talk to the server through this class, so wire details (envelopes, signing,
pagination, error bodies) live in exactly one place.

Public-API answers are returned as the server's JSON objects, typed with the
`TypedDict`s of `vxtap.wire.answers` that the server's OpenAPI document is
generated from (not `vxtap.model` values: the
wire carries ids, timestamps and Huawei's field names, and `--json` must print
exactly what the server said). The internal API speaks `vxtap.model` types,
because server and agent share those definitions.
"""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast, overload
from urllib.parse import quote

import httpx
from pydantic import ValidationError

from vxtap import auth, model
from vxtap.model import Counter, DesiredState, Interface, Port, SessionStats
from vxtap.wire.answers import (
    AgentCredentialOut,
    FilterOut,
    HostOut,
    ItemT,
    Page,
    PortV1Out,
    RuleOut,
    SessionOut,
    TargetGroupOut,
)

DEFAULT_ENDPOINT = "http://127.0.0.1:9696"
DEFAULT_TIMEOUT_S = 10.0
# The largest answer read; anything longer is refused before it is all in memory. The
# agent's client is stricter (`vxtap.agent.channel.MAX_DESIRED_STATE_BYTES`): it runs on
# hosts that carry production.
MAX_ANSWER_BYTES = 256 << 20
# A held request is answered 304 after its `wait` plus up to this fraction of it (jitter,
# so that a fleet that connected at once does not renew its requests at once).
HELD_JITTER_FRACTION = 0.1
# Beyond that, how long a held answer may take to arrive in full (a trickle is cut off).
ANSWER_GRACE_S = 5.0
MAX_PAGE_SIZE = model.MAX_PAGE_SIZE

QueryValue = str | int | bool


# --- errors --------------------------------------------------------------------


class VxtapClientError(Exception):
    """Anything that kept a request from getting a successful answer."""


class ApiError(VxtapClientError):
    """The server refused a request: HTTP status plus Huawei's error body."""

    def __init__(
        self, status: int, error_code: str, error_msg: str, request_id: str | None = None
    ) -> None:
        super().__init__(f"{error_code}: {error_msg}")
        self.status = status
        self.error_code = error_code
        self.error_msg = error_msg
        self.request_id = request_id


class InvalidAnswer(VxtapClientError):
    """An answer that is not what the API promises: malformed, too large or too slow."""

    def __init__(self, endpoint: str, reason: str) -> None:
        super().__init__(f"invalid answer from {endpoint}: {reason}")
        self.endpoint = endpoint
        self.reason = reason


class ServerUnreachable(VxtapClientError):
    """No HTTP answer at all: connection refused, DNS failure, timeout."""

    def __init__(self, endpoint: str, reason: str) -> None:
        super().__init__(f"cannot reach vxtap server at {endpoint}: {reason}")
        self.endpoint = endpoint
        self.reason = reason


class UntrustedServer(ServerUnreachable):
    """The TLS handshake failed: the server's certificate is not signed by a trusted CA,
    names another host, or the endpoint does not speak TLS."""

    def __init__(self, endpoint: str, reason: str) -> None:
        super().__init__(endpoint, reason)
        self.args = (f"no trusted TLS connection to vxtap server at {endpoint}: {reason}",)


def tls_context(ca_bundle: str | Path | None = None) -> ssl.SSLContext:
    """Certificate checks against `ca_bundle` (PEM) when given, else the system's store.

    A bundle replaces the system store rather than adding to it: an agent trusts its
    deployment's CA only. Raise VxtapClientError when the bundle cannot be read.
    """
    try:
        return ssl.create_default_context(cafile=None if ca_bundle is None else str(ca_bundle))
    except FileNotFoundError:
        raise VxtapClientError(f"CA bundle {ca_bundle} does not exist") from None
    except (OSError, ssl.SSLError) as error:
        raise VxtapClientError(
            f"CA bundle {ca_bundle} is not a readable PEM file of certificates ({error})"
        ) from None


def _tls_failure(error: httpx.TransportError) -> str | None:
    """A clear reason when a connection failed in the TLS handshake; None otherwise."""
    text = str(error)
    if "CERTIFICATE_VERIFY_FAILED" in text:
        detail = text.rpartition("certificate verify failed:")[2].strip(" )") or text
        return (
            f"its certificate is not trusted ({detail}); pass the CA that signed it with "
            "--cacert FILE or VXTAP_CA_BUNDLE"
        )
    if "WRONG_VERSION_NUMBER" in text or "record layer failure" in text:
        return "it does not speak TLS at this address (use http:// or start it with --tls-cert)"
    return None


# --- signing -------------------------------------------------------------------


class SdkHmacAuth(httpx.Auth):
    """Signs each request the way the official SDK does (`vxtap.auth.sign`)."""

    requires_request_body = True

    def __init__(self, ak: str, sk: str, project_id: str) -> None:
        self._ak = ak
        self._sk = sk
        self._project_id = project_id

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        # Sign what the SDK signs (Content-Type plus the headers `sign` adds), not
        # httpx's transport headers (Accept-Encoding, Connection...) that a proxy may rewrite.
        content_type = request.headers.get("Content-Type")
        added = auth.sign(
            request.method,
            str(request.url),
            {"Content-Type": content_type} if content_type else {},
            request.content,
            self._ak,
            self._sk,
            self._project_id,
        )
        request.headers.update(added)
        yield request


# --- the client ----------------------------------------------------------------


def _page_from(answer: Mapping[str, Any], key: str) -> Page[Any]:
    info = answer.get("page_info") or {}
    items = list(answer.get(key, []))
    return Page(
        items=items,
        previous_marker=info.get("previous_marker"),
        next_marker=info.get("next_marker"),
        current_count=int(info.get("current_count", len(items))),
    )


def _query(
    limit: int | None, marker: str | None, where: Mapping[str, QueryValue]
) -> dict[str, str]:
    params: dict[str, str] = {}
    for name, value in where.items():
        # bool first: it is an int subclass, and the API spells it true/false.
        params[name] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    if limit is not None:
        params["limit"] = str(limit)
    if marker is not None:
        params["marker"] = marker
    return params


def _first_line(error: Exception) -> str:
    return (str(error).splitlines() or [type(error).__name__])[0][:200]


def _without_none(fields: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


@dataclass(frozen=True)
class Fetched:
    """A desired-state answer: its ETag (unquoted) and the state, None when unchanged."""

    etag: str | None
    state: DesiredState | None


class VxtapClient:
    """Signed client for one project of one `vxtap server`.

    Usable as a context manager; otherwise call `close()`. Every method raises
    `ApiError` for a refused request and `ServerUnreachable` when there is no
    answer.
    """

    def __init__(
        self,
        endpoint: str,
        ak: str,
        sk: str,
        project_id: str,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        transport: httpx.BaseTransport | None = None,
        ca_bundle: str | Path | None = None,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
    ) -> None:
        """`ca_bundle`: PEM file of the CAs an https:// endpoint's certificate may be
        signed by; the system's trust store when None."""
        self.endpoint = endpoint.rstrip("/")
        self.max_answer_bytes = max_answer_bytes
        self.project_id = project_id
        self._http = httpx.Client(
            base_url=self.endpoint,
            auth=SdkHmacAuth(ak, sk, project_id),
            timeout=timeout,
            transport=transport,
            verify=tls_context(ca_bundle) if self.endpoint.startswith("https:") else True,
            headers={"Content-Type": "application/json;charset=UTF-8"},
        )
        self._v3 = f"/v3/{quote(project_id, safe='')}/vpc"
        self._v1 = f"/v1/{quote(project_id, safe='')}"
        self._internal = f"/internal/v1/{quote(project_id, safe='')}"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> VxtapClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- transport ---

    def _send(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: httpx.Timeout | None = None,
        deadline: float | None = None,
    ) -> httpx.Response:
        """One request; the answer is streamed in and refused (`InvalidAnswer`) past
        `max_answer_bytes` or when the whole of it takes longer than `deadline` seconds
        (default: the read timeout), so a broken server can neither fill our memory nor
        hold us with a trickle."""
        content = None if body is None else json.dumps(body).encode()
        timeout = timeout or self._http.timeout
        give_up = time.monotonic() + (deadline or timeout.read or DEFAULT_TIMEOUT_S)
        # Raw bytes only: a compressed answer could inflate far past the cap in one chunk.
        sent = {"Accept-Encoding": "identity", **(headers or {})}
        try:
            with self._http.stream(
                method, path, content=content, params=params, headers=sent, timeout=timeout
            ) as response:
                answer = self._read_capped(response, give_up)
        except httpx.TransportError as error:
            tls = _tls_failure(error)
            if tls is not None:
                raise UntrustedServer(self.endpoint, tls) from error
            raise ServerUnreachable(self.endpoint, str(error) or type(error).__name__) from error
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            content=answer,
            request=response.request,
        )

    def _read_capped(self, response: httpx.Response, give_up: float) -> bytes:
        limit = self.max_answer_bytes
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            raise InvalidAnswer(self.endpoint, f"{declared} bytes, more than the {limit} allowed")
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding != "identity":
            raise InvalidAnswer(self.endpoint, f"unasked-for Content-Encoding {encoding!r}")
        chunks: list[bytes] = []
        size = 0
        # A transport that answers from memory (tests) hands over a body read already.
        stream = [response.content] if response.is_stream_consumed else response.iter_raw()
        for chunk in stream:
            size += len(chunk)
            if size > limit:
                raise InvalidAnswer(self.endpoint, f"more than the {limit} bytes allowed")
            if time.monotonic() > give_up:
                raise InvalidAnswer(self.endpoint, "the answer took too long to arrive")
            chunks.append(chunk)
        return b"".join(chunks)

    def _request(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> Any:
        response = self._send(method, path, body=body, params=params)
        if not response.is_success:
            raise self._error_from(response)
        try:
            return response.json() if response.content else None
        except ValueError as error:
            raise InvalidAnswer(self.endpoint, f"not JSON: {_first_line(error)}") from None

    @classmethod
    def _error_from(cls, response: httpx.Response) -> ApiError:
        return cls._refusal(response.status_code, response.reason_phrase, response.content)

    @staticmethod
    def _refusal(status: int, reason: str, body: bytes) -> ApiError:
        try:
            answer = json.loads(body)
        except ValueError:
            answer = None
        if isinstance(answer, dict) and "error_code" in answer:
            return ApiError(
                status,
                str(answer["error_code"]),
                str(answer.get("error_msg", "")),
                answer.get("request_id"),
            )
        # Not Huawei's error shape (a proxy in between, or not a vxtap server).
        text = body.decode(errors="replace").strip()
        first = text.splitlines()[0][:200] if text else ""
        return ApiError(status, f"HTTP.{status}", first or reason)

    def _pages(
        self, fetch: Callable[[str | None], Page[ItemT]], first_marker: str | None = None
    ) -> Iterator[ItemT]:
        marker = first_marker
        while True:
            page = fetch(marker)
            yield from page.items
            if page.next_marker is None or not page.items:
                return
            marker = page.next_marker

    # --- filters ---

    def create_filter(self, name: str, description: str | None = None) -> FilterOut:
        body = {"traffic_mirror_filter": _without_none({"name": name, "description": description})}
        answer = self._request("POST", f"{self._v3}/traffic-mirror-filters", body=body)
        return cast(FilterOut, answer["traffic_mirror_filter"])

    def show_filter(self, filter_id: str) -> FilterOut:
        answer = self._request("GET", f"{self._v3}/traffic-mirror-filters/{quote(filter_id)}")
        return cast(FilterOut, answer["traffic_mirror_filter"])

    def update_filter(
        self, filter_id: str, *, name: str | None = None, description: str | None = None
    ) -> FilterOut:
        body = {"traffic_mirror_filter": _without_none({"name": name, "description": description})}
        answer = self._request(
            "PUT", f"{self._v3}/traffic-mirror-filters/{quote(filter_id)}", body=body
        )
        return cast(FilterOut, answer["traffic_mirror_filter"])

    def delete_filter(self, filter_id: str) -> None:
        self._request("DELETE", f"{self._v3}/traffic-mirror-filters/{quote(filter_id)}")

    def list_filters(
        self,
        *,
        limit: int | None = None,
        marker: str | None = None,
        where: Mapping[str, QueryValue] | None = None,
    ) -> Page[FilterOut]:
        answer = self._request(
            "GET", f"{self._v3}/traffic-mirror-filters", params=_query(limit, marker, where or {})
        )
        return _page_from(answer, "traffic_mirror_filters")

    def iter_filters(
        self, *, page_size: int = MAX_PAGE_SIZE, where: Mapping[str, QueryValue] | None = None
    ) -> Iterator[FilterOut]:
        return self._pages(lambda m: self.list_filters(limit=page_size, marker=m, where=where))

    # --- rules ---

    def create_rule(
        self,
        filter_id: str,
        *,
        direction: str,
        priority: int,
        protocol: str,
        action: str = "accept",
        ethertype: str = "IPv4",
        source_cidr_block: str | None = None,
        destination_cidr_block: str | None = None,
        source_port_range: str | None = None,
        destination_port_range: str | None = None,
        description: str | None = None,
    ) -> RuleOut:
        fields = {
            "traffic_mirror_filter_id": filter_id,
            "direction": direction,
            "priority": priority,
            "action": action,
            "ethertype": ethertype,
            "protocol": protocol,
            "source_cidr_block": source_cidr_block,
            "destination_cidr_block": destination_cidr_block,
            "source_port_range": source_port_range,
            "destination_port_range": destination_port_range,
            "description": description,
        }
        body = {"traffic_mirror_filter_rule": _without_none(fields)}
        answer = self._request("POST", f"{self._v3}/traffic-mirror-filter-rules", body=body)
        return cast(RuleOut, answer["traffic_mirror_filter_rule"])

    def show_rule(self, rule_id: str) -> RuleOut:
        answer = self._request("GET", f"{self._v3}/traffic-mirror-filter-rules/{quote(rule_id)}")
        return cast(RuleOut, answer["traffic_mirror_filter_rule"])

    def update_rule(
        self,
        rule_id: str,
        *,
        priority: int | None = None,
        action: str | None = None,
        ethertype: str | None = None,
        protocol: str | None = None,
        source_cidr_block: str | None = None,
        destination_cidr_block: str | None = None,
        source_port_range: str | None = None,
        destination_port_range: str | None = None,
        description: str | None = None,
    ) -> RuleOut:
        """Change the given fields; None leaves a field as it is.

        Direction and filter are fixed at creation (docs/behaviour.md §1.3).
        """
        fields = {
            "priority": priority,
            "action": action,
            "ethertype": ethertype,
            "protocol": protocol,
            "source_cidr_block": source_cidr_block,
            "destination_cidr_block": destination_cidr_block,
            "source_port_range": source_port_range,
            "destination_port_range": destination_port_range,
            "description": description,
        }
        body = {"traffic_mirror_filter_rule": _without_none(fields)}
        answer = self._request(
            "PUT", f"{self._v3}/traffic-mirror-filter-rules/{quote(rule_id)}", body=body
        )
        return cast(RuleOut, answer["traffic_mirror_filter_rule"])

    def delete_rule(self, rule_id: str) -> None:
        self._request("DELETE", f"{self._v3}/traffic-mirror-filter-rules/{quote(rule_id)}")

    def list_rules(
        self,
        *,
        limit: int | None = None,
        marker: str | None = None,
        where: Mapping[str, QueryValue] | None = None,
    ) -> Page[RuleOut]:
        answer = self._request(
            "GET",
            f"{self._v3}/traffic-mirror-filter-rules",
            params=_query(limit, marker, where or {}),
        )
        return _page_from(answer, "traffic_mirror_filter_rules")

    def iter_rules(
        self, *, page_size: int = MAX_PAGE_SIZE, where: Mapping[str, QueryValue] | None = None
    ) -> Iterator[RuleOut]:
        return self._pages(lambda m: self.list_rules(limit=page_size, marker=m, where=where))

    # --- sessions ---

    def create_session(
        self,
        name: str,
        *,
        filter_id: str,
        sources: Iterable[str],
        target_id: str,
        priority: int,
        target_type: str = "eni",
        virtual_network_id: int | None = None,
        packet_length: int | None = None,
        enabled: bool | None = None,
        description: str | None = None,
        type: str | None = None,
    ) -> SessionOut:
        """Create a session; VNI, packet length and enabled default on the server (1, 96, true)."""
        fields = {
            "name": name,
            "description": description,
            "traffic_mirror_filter_id": filter_id,
            "traffic_mirror_sources": list(sources),
            "traffic_mirror_target_id": target_id,
            "traffic_mirror_target_type": target_type,
            "virtual_network_id": virtual_network_id,
            "packet_length": packet_length,
            "priority": priority,
            "enabled": enabled,
            "type": type,
        }
        body = {"traffic_mirror_session": _without_none(fields)}
        answer = self._request("POST", f"{self._v3}/traffic-mirror-sessions", body=body)
        return cast(SessionOut, answer["traffic_mirror_session"])

    def show_session(self, session_id: str) -> SessionOut:
        answer = self._request("GET", f"{self._v3}/traffic-mirror-sessions/{quote(session_id)}")
        return cast(SessionOut, answer["traffic_mirror_session"])

    def update_session(
        self,
        session_id: str,
        *,
        name: str | None = None,
        description: str | None = None,
        filter_id: str | None = None,
        target_id: str | None = None,
        target_type: str | None = None,
        virtual_network_id: int | None = None,
        packet_length: int | None = None,
        priority: int | None = None,
        enabled: bool | None = None,
        type: str | None = None,
    ) -> SessionOut:
        """Change the given fields; sources change only through add/remove_sources."""
        fields = {
            "name": name,
            "description": description,
            "traffic_mirror_filter_id": filter_id,
            "traffic_mirror_target_id": target_id,
            "traffic_mirror_target_type": target_type,
            "virtual_network_id": virtual_network_id,
            "packet_length": packet_length,
            "priority": priority,
            "enabled": enabled,
            "type": type,
        }
        body = {"traffic_mirror_session": _without_none(fields)}
        answer = self._request(
            "PUT", f"{self._v3}/traffic-mirror-sessions/{quote(session_id)}", body=body
        )
        return cast(SessionOut, answer["traffic_mirror_session"])

    def add_sources(self, session_id: str, sources: Iterable[str]) -> SessionOut:
        return self._change_sources(session_id, "add-sources", sources)

    def remove_sources(self, session_id: str, sources: Iterable[str]) -> SessionOut:
        return self._change_sources(session_id, "remove-sources", sources)

    def _change_sources(self, session_id: str, verb: str, sources: Iterable[str]) -> SessionOut:
        body = {"traffic_mirror_session": {"traffic_mirror_sources": list(sources)}}
        answer = self._request(
            "PUT", f"{self._v3}/traffic-mirror-sessions/{quote(session_id)}/{verb}", body=body
        )
        return cast(SessionOut, answer["traffic_mirror_session"])

    def delete_session(self, session_id: str) -> None:
        self._request("DELETE", f"{self._v3}/traffic-mirror-sessions/{quote(session_id)}")

    def list_sessions(
        self,
        *,
        limit: int | None = None,
        marker: str | None = None,
        where: Mapping[str, QueryValue] | None = None,
    ) -> Page[SessionOut]:
        answer = self._request(
            "GET", f"{self._v3}/traffic-mirror-sessions", params=_query(limit, marker, where or {})
        )
        return _page_from(answer, "traffic_mirror_sessions")

    def iter_sessions(
        self, *, page_size: int = MAX_PAGE_SIZE, where: Mapping[str, QueryValue] | None = None
    ) -> Iterator[SessionOut]:
        return self._pages(lambda m: self.list_sessions(limit=page_size, marker=m, where=where))

    # --- ports (public, read-only, Huawei v1 shape) ---

    def list_ports(
        self,
        *,
        limit: int | None = None,
        marker: str | None = None,
        where: Mapping[str, QueryValue] | None = None,
    ) -> Page[PortV1Out]:
        answer = self._request(
            "GET", f"{self._v1}/ports", params=_query(limit, marker, where or {})
        )
        return _page_from(answer, "ports")

    def iter_ports(
        self, *, page_size: int = MAX_PAGE_SIZE, where: Mapping[str, QueryValue] | None = None
    ) -> Iterator[PortV1Out]:
        return self._pages(lambda m: self.list_ports(limit=page_size, marker=m, where=where))

    def show_port(self, port_id: str) -> PortV1Out:
        answer = self._request("GET", f"{self._v1}/ports/{quote(port_id)}")
        return cast(PortV1Out, answer["port"])

    # --- target groups (internal API, docs/elb.md) ---

    def _groups(self, group_id: str | None = None, verb: str | None = None) -> str:
        path = f"{self._internal}/target-groups"
        if group_id is not None:
            path += f"/{quote(group_id, safe='')}"
        return path if verb is None else f"{path}/{verb}"

    def create_target_group(
        self, name: str, *, description: str | None = None, ports: Iterable[str] = ()
    ) -> TargetGroupOut:
        fields = {"name": name, "description": description, "ports": list(ports)}
        answer = self._request("POST", self._groups(), body={"target_group": _without_none(fields)})
        return cast(TargetGroupOut, answer["target_group"])

    def show_target_group(self, group_id: str) -> TargetGroupOut:
        answer = self._request("GET", self._groups(group_id))
        return cast(TargetGroupOut, answer["target_group"])

    def update_target_group(
        self, group_id: str, *, name: str | None = None, description: str | None = None
    ) -> TargetGroupOut:
        body = {"target_group": _without_none({"name": name, "description": description})}
        answer = self._request("PUT", self._groups(group_id), body=body)
        return cast(TargetGroupOut, answer["target_group"])

    def add_members(self, group_id: str, ports: Iterable[str]) -> TargetGroupOut:
        body = {"target_group": {"ports": list(ports)}}
        answer = self._request("PUT", self._groups(group_id, "add-members"), body=body)
        return cast(TargetGroupOut, answer["target_group"])

    def remove_members(self, group_id: str, ports: Iterable[str]) -> TargetGroupOut:
        body = {"target_group": {"ports": list(ports)}}
        answer = self._request("PUT", self._groups(group_id, "remove-members"), body=body)
        return cast(TargetGroupOut, answer["target_group"])

    def delete_target_group(self, group_id: str) -> None:
        self._request("DELETE", self._groups(group_id))

    def list_target_groups(
        self,
        *,
        limit: int | None = None,
        marker: str | None = None,
        where: Mapping[str, QueryValue] | None = None,
    ) -> Page[TargetGroupOut]:
        answer = self._request("GET", self._groups(), params=_query(limit, marker, where or {}))
        return _page_from(answer, "target_groups")

    def iter_target_groups(
        self, *, page_size: int = MAX_PAGE_SIZE, where: Mapping[str, QueryValue] | None = None
    ) -> Iterator[TargetGroupOut]:
        return self._pages(
            lambda m: self.list_target_groups(limit=page_size, marker=m, where=where)
        )

    # --- internal API (agents, and ports by hand) ---

    def register_ports(self, host: str, interfaces: Iterable[Interface]) -> list[Port]:
        """Register or refresh `host`'s interfaces; the same (host, device) keeps its id."""
        body = {"ports": [i.model_dump(mode="json") for i in interfaces]}
        answer = self._request(
            "PUT", f"{self._internal}/hosts/{quote(host, safe='')}/ports", body=body
        )
        try:
            return [Port.model_validate(p) for p in answer["ports"]]
        except (ValueError, TypeError, KeyError) as error:
            raise InvalidAnswer(
                self.endpoint, f"not a list of ports: {_first_line(error)}"
            ) from None

    def create_port(
        self,
        host: str,
        device: str,
        *,
        ipv4: Iterable[str] = (),
        ipv6: Iterable[str] = (),
        mac: str | None = None,
    ) -> Port:
        """A port by hand, for a target on a machine that runs no agent."""
        fields = {
            "host": host,
            "device": device,
            "mac": mac,
            "ipv4": list(ipv4),
            "ipv6": list(ipv6),
        }
        answer = self._request(
            "POST", f"{self._internal}/ports", body={"port": _without_none(fields)}
        )
        return Port.model_validate(answer["port"])

    def delete_port(self, port_id: str) -> None:
        self._request("DELETE", f"{self._internal}/ports/{quote(port_id, safe='')}")

    @overload
    def desired_state(self, host: str, *, if_none_match: None = None) -> DesiredState: ...

    @overload
    def desired_state(
        self, host: str, *, if_none_match: str | None = None
    ) -> DesiredState | None: ...

    def desired_state(self, host: str, *, if_none_match: str | None = None) -> DesiredState | None:
        """What `host`'s agent must program. With `if_none_match` (an ETag from an earlier
        answer, or the content revision the caller has): None when that is still current
        (HTTP 304, no body to receive or parse), else the new state."""
        return self.fetch_desired_state(host, if_none_match=if_none_match).state

    def fetch_desired_state(
        self,
        host: str,
        *,
        if_none_match: str | None = None,
        wait: float | None = None,
        deadline: float | None = None,
    ) -> Fetched:
        """`desired_state` with the answer's ETag, to send as `if_none_match` next time: a
        tag carrying the host's current revision is answered without building the state
        (see docs/agent.md).

        `wait` (seconds, with `if_none_match`) makes it a held request: the server answers
        when the host's state changes, else 304 after `wait`. The answer is streamed and
        refused (`InvalidAnswer`) past `MAX_DESIRED_STATE_BYTES` or past `deadline`
        seconds for the whole answer (default: the client's timeout, plus `wait`)."""
        headers = {} if if_none_match is None else {"If-None-Match": f'"{if_none_match}"'}
        params = None if wait is None else {"wait": f"{wait:g}"}
        timeout = self._http.timeout
        if wait is not None:
            # Waiting for the first byte of a held answer is not a stall.
            held_for = wait * (1 + HELD_JITTER_FRACTION) + ANSWER_GRACE_S
            timeout = httpx.Timeout(timeout.connect, read=held_for, write=timeout.write, pool=None)
        response = self._send(
            "GET",
            f"{self._internal}/hosts/{quote(host, safe='')}/desired-state",
            params=params,
            headers=headers,
            timeout=timeout,
            deadline=deadline,
        )
        etag = response.headers.get("ETag")
        tag = None if etag is None else etag.removeprefix("W/").strip('"')
        if response.status_code == 304 and if_none_match is not None:
            return Fetched(tag, None)
        if not response.is_success:
            raise self._error_from(response)
        try:
            return Fetched(tag, DesiredState.model_validate_json(response.content))
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "body"
            reason = f"{error.error_count()} error(s), first at {where}: {first['msg']}"
            raise InvalidAnswer(self.endpoint, f"not a desired state: {reason[:200]}") from None
        except ValueError as error:
            raise InvalidAnswer(
                self.endpoint, f"not a desired state: {_first_line(error)}"
            ) from None

    def report_counters(
        self, host: str, sessions: Mapping[str, Counter], rules: Mapping[str, Counter]
    ) -> None:
        """Totals since the agent's kernel state was created (the server keeps the latest)."""
        body = {
            "sessions": {k: v.model_dump() for k, v in sessions.items()},
            "rules": {k: v.model_dump() for k, v in rules.items()},
        }
        self._request("PUT", f"{self._internal}/hosts/{quote(host, safe='')}/counters", body=body)

    def collector_heartbeat(self, host: str, devices: Sequence[str] | None = None) -> None:
        """`host`'s collector receives on `devices` (None: on all of the host's ports):
        the target-group members that are those ports are healthy (docs/elb.md)."""
        body: dict[str, Any] = {} if devices is None else {"devices": list(devices)}
        self._request(
            "PUT", f"{self._internal}/hosts/{quote(host, safe='')}/collector-heartbeat", body=body
        )

    def report_status(
        self,
        host: str,
        *,
        agent_version: str,
        applied_revision: str | None,
        apply_error: str | None,
        drift_repairs: int,
    ) -> None:
        """What the agent of `host` applied (its status in `vxtap host list`)."""
        body = {
            "agent_version": agent_version,
            "applied_revision": applied_revision,
            "apply_error": apply_error,
            "drift_repairs": drift_repairs,
        }
        self._request("PUT", f"{self._internal}/hosts/{quote(host, safe='')}/status", body=body)

    # --- the fleet (administrators) ---

    def enrol_host(self, host: str) -> tuple[AgentCredentialOut, HostOut]:
        """Issue `host`'s agent credential; the secret is in this answer only."""
        answer = self._request("POST", f"{self._internal}/hosts", body={"host": host})
        return cast(AgentCredentialOut, answer["credential"]), cast(HostOut, answer["host"])

    def revoke_host(self, host: str) -> None:
        self._request("DELETE", f"{self._internal}/hosts/{quote(host, safe='')}")

    def list_hosts(self) -> list[HostOut]:
        answer = self._request("GET", f"{self._internal}/hosts")
        return cast(list[HostOut], answer["hosts"])

    def show_host(self, host: str) -> HostOut:
        answer = self._request("GET", f"{self._internal}/hosts/{quote(host, safe='')}")
        return cast(HostOut, answer["host"])

    def session_stats(self) -> SessionStats:
        answer = self._request("GET", f"{self._internal}/session-stats")
        return SessionStats.model_validate(
            {k: answer.get(k, {}) for k in ("sessions", "rules", "hosts", "members")}
        )
