"""The internal API: what agents call (their ports, desired state, counters) and ports
made by hand; health. Agents may only act on their own host (`vxtap.api.access`)."""

from __future__ import annotations

import asyncio
import functools
import random
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy.engine import Connection
from starlette.concurrency import run_in_threadpool

from vxtap.api import render
from vxtap.api.errors import Unauthorized, Unavailable
from vxtap.api.held import MAX_WAIT_S, etags
from vxtap.api.openapi import json_body, query_parameters
from vxtap.api.routes.common import (
    ERROR_RESPONSES,
    INTERNAL,
    answer,
    context,
    list_answer,
    no_content,
    path_host,
    read_body,
)
from vxtap.client import HELD_JITTER_FRACTION
from vxtap.store import agent_view, common
from vxtap.store import health as member_health
from vxtap.store import ports as port_store
from vxtap.store.ports import PortSpec
from vxtap.wire import query
from vxtap.wire.requests import (
    CollectorHeartbeatRequest,
    CountersRequest,
    CreatePortRequest,
    HostPortOption,
    RegisterPortsRequest,
)

# How long a counter report may queue behind others before it is refused (503; the
# agent reports again later).
COUNTERS_QUEUE_S = 2.0

BODY_MODELS = (
    RegisterPortsRequest,
    CreatePortRequest,
    CountersRequest,
    CollectorHeartbeatRequest,
)
router = APIRouter(prefix=INTERNAL, tags=["internal"], responses=ERROR_RESPONSES)
health = APIRouter(tags=["health"])


def _port_spec(option: HostPortOption) -> PortSpec:
    """A validated port body in the store's terms: the one place they are mapped."""
    return PortSpec(
        device=option.device, ipv4=tuple(option.ipv4), ipv6=tuple(option.ipv6), mac=option.mac
    )


@router.put(
    "/hosts/{host}/ports",
    summary="Register or refresh a host's ports",
    openapi_extra=json_body(RegisterPortsRequest),
)
async def register_ports(project_id: str, host: str, request: Request) -> JSONResponse:
    checked_host = path_host(host)
    ports = [_port_spec(p) for p in (await read_body(request, RegisterPortsRequest)).ports]
    db = context(request).database
    result = await db.run(
        db.upsert,
        lambda s: [
            render.port_json(r)
            for r in port_store.register_host_ports(s, project_id, checked_host, ports)
        ],
    )
    return answer(200, ports=result)


@router.get(
    "/ports",
    summary="List ports (internal shape)",
    openapi_extra=query_parameters(query.PORT_QUERY),
)
async def list_ports(project_id: str, request: Request) -> JSONResponse:
    return await list_answer(
        request, project_id, query.PORT_QUERY, port_store.list_ports, render.port_json, key="ports"
    )


@router.post(
    "/ports",
    status_code=201,
    summary="Create a port by hand",
    openapi_extra=json_body(CreatePortRequest),
)
async def create_port(project_id: str, request: Request) -> JSONResponse:
    option = (await read_body(request, CreatePortRequest)).port
    spec = _port_spec(option)
    db = context(request).database
    result = await db.run(
        db.write,
        lambda s: render.port_json(port_store.create_port(s, project_id, option.host, spec)),
    )
    return answer(201, port=result)


@router.get("/ports/{port_id}", summary="Show a port")
async def show_port(project_id: str, port_id: str, request: Request) -> JSONResponse:
    db = context(request).database
    result = await db.run(
        db.read, lambda s: render.port_json(port_store.get_port(s, project_id, port_id))
    )
    return answer(200, port=result)


@router.delete("/ports/{port_id}", status_code=204, summary="Delete a port no session names")
async def delete_port(project_id: str, port_id: str, request: Request) -> Response:
    db = context(request).database
    await db.run(db.write, lambda s: port_store.delete_port(s, project_id, port_id))
    return no_content()


@router.get("/hosts/{host}/desired-state", summary="What a host's agent must program")
async def desired_state(
    project_id: str,
    host: str,
    request: Request,
    wait: Annotated[float | None, Query(ge=0, le=MAX_WAIT_S)] = None,
) -> Response:
    """`ETag` is `"h<host revision>-<content revision>"`. An `If-None-Match` naming
    the host's current revision gets 304 from one primary-key read, nothing built;
    otherwise the state is built (revision read first, so the data is at least as
    new as the revision it is labelled with) and a tag naming its content revision
    (the whole tag, or a bare revision as an agent knows it after a restart) still
    gets 304, with the new tag.

    With `wait` (seconds) and `If-None-Match`, a request that would get 304 is held
    until the host's revision moves (a change to this host's desired state, through
    any server process), or until `wait` plus a little jitter passes: then 304."""
    api = context(request)
    db, held = api.database, api.held
    checked_host = path_host(host)
    tags = etags(request.headers.get("if-none-match"))
    loop = asyncio.get_running_loop()
    held_until = None
    if wait and tags:
        held_until = loop.time() + wait * (1 + random.uniform(0, HELD_JITTER_FRACTION))
    while True:
        action = functools.partial(
            _host_state, project=project_id, host=checked_host, tags=tuple(tags)
        )
        seen = held.generation(project_id, checked_host)  # before the read
        known = held.unchanged(project_id, checked_host, tags)
        if known is not None:  # nothing changed since it was last read
            (revision, tag), state = known, None
        else:
            revision, tag, state = await db.run(db.read_rows, action)
            held.remember(project_id, checked_host, seen, revision)
            if state is not None:
                held.remember_built(project_id, checked_host, revision, state["revision"])
        etag = f'"{tag}"'
        if (
            state is not None
            and "*" not in tags
            and state["revision"] not in {t.rpartition("-")[2] for t in tags}
        ):
            return JSONResponse(state, headers={"ETag": etag})
        remaining = 0.0 if held_until is None else held_until - loop.time()
        if remaining <= 0 or held.shutting_down:
            return Response(status_code=304, headers={"ETag": etag})
        await held.wait(project_id, checked_host, revision, seen, remaining)
        credential = request.scope.get("state", {}).get("credential")
        if credential is not None and await api.revoked(credential):
            raise Unauthorized(f"access key {credential.ak} was revoked")
        tags = [tag]  # what the client holds, as of the state just compared


def _host_state(
    db: Connection, *, project: str, host: str, tags: tuple[str, ...]
) -> tuple[int, str, dict[str, Any] | None]:
    """(host revision, ETag, state); the state is None, not built, when a tag names the
    host's current revision."""
    revision = common.host_revision(db, project, host)
    prefix = f"h{revision}"
    for tag in tags:
        if tag.partition("-")[0] == prefix:
            return revision, tag, None
    state = agent_view.desired_state(db, project, host)
    return revision, f"{prefix}-{state['revision']}", state


@router.put(
    "/hosts/{host}/counters",
    status_code=204,
    summary="Report a host's counters",
    openapi_extra=json_body(CountersRequest),
)
async def put_counters(project_id: str, host: str, request: Request) -> Response:
    checked_host = path_host(host)
    body = await read_body(request, CountersRequest)
    sessions = {k: v.model_dump() for k, v in body.sessions.items()}
    rules = {k: v.model_dump() for k, v in body.rules.items()}
    members = {k: v.model_dump() for k, v in body.members.items()}
    api = context(request)
    # One report stored at a time per process, on a worker thread: a flood of large
    # reports queues here (and is shed with 503 past COUNTERS_QUEUE_S) instead of
    # taking the event loop or the database from every other request.
    try:
        await asyncio.wait_for(api.counters_gate.acquire(), COUNTERS_QUEUE_S)
    except TimeoutError:
        raise Unavailable("too many counter reports at once; retry later") from None
    try:
        await run_in_threadpool(
            api.database.upsert,
            lambda s: agent_view.put_counters(
                s, project_id, checked_host, sessions, rules, members
            ),
        )
    finally:
        api.counters_gate.release()
    return no_content()


@router.put(
    "/hosts/{host}/collector-heartbeat",
    status_code=204,
    summary="The host's collector is receiving (target-group member health)",
    openapi_extra=json_body(CollectorHeartbeatRequest),
)
async def collector_heartbeat(project_id: str, host: str, request: Request) -> Response:
    """The target-group members that are the named devices' ports (all of the host's
    ports when none are named) heard from now: healthy until `member_health.SILENCE_S` passes
    without another heartbeat (docs/elb.md, "Health"). A device that is not one of the
    host's ports is refused (404) and nothing is recorded."""
    checked_host = path_host(host)
    body = await read_body(request, CollectorHeartbeatRequest)
    devices = None if body.devices is None else tuple(body.devices)
    db = context(request).database
    await db.run(db.write, lambda s: member_health.heartbeat(s, project_id, checked_host, devices))
    return no_content()


@router.get("/session-stats", summary="Counters summed over hosts")
async def session_stats(project_id: str, request: Request) -> JSONResponse:
    db = context(request).database
    stats = await db.run(db.read, lambda s: agent_view.session_stats(s, project_id))
    return answer(200, **stats)


@health.get("/healthz", summary="Liveness (unsigned)")
async def healthz() -> JSONResponse:
    return JSONResponse({"status": "ok"})
