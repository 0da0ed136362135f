"""The ASGI application: Huawei v3 traffic mirroring, v1 ports (read-only), the internal API.

Layers: `AuthMiddleware` (signature, project scope, body size) in front of every
route except health and the OpenAPI pages; routes that only convert between the
wire (`vxtap.api.wire`) and the repository (`vxtap.store.repository`); one
database transaction per request. Every refusal, FastAPI's own validation
included, answers `{"request_id", "error_msg", "error_code"}`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from contextvars import ContextVar
from datetime import datetime
from typing import Annotated, Any, TypeVar

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.types import DecoratedCallable
from pydantic import BaseModel, ValidationError
from sqlalchemy.engine import Connection
from sqlalchemy.exc import (
    SQLAlchemyError,
)
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vxtap import auth, enrolment, model
from vxtap.api import access, render
from vxtap.api.errors import (
    REQUEST_ID,
    BadRequest,
    Forbidden,
    Unauthorized,
    Unavailable,
    install_error_handlers,
    refusal_response,
)
from vxtap.api.held import HeldRequests
from vxtap.client import HELD_JITTER_FRACTION
from vxtap.console import mount_console
from vxtap.store import errors as store_errors
from vxtap.store import hosts
from vxtap.store import repository as repo
from vxtap.store.db import Store
from vxtap.store.schema import SessionRow
from vxtap.wire import answers, fields, query, requests

log = logging.getLogger("vxtap.api")

MAX_BODY_BYTES = 1 << 20
# SQLite: how long a write waits for another writer's lock before answering 503. The
# wait happens on a worker thread, never on the event loop (see `_install_routes`).
LOCK_WAIT_S = 5.0
# How long a counter report may queue behind others before it is refused (503; the
# agent reports again later).
COUNTERS_QUEUE_S = 2.0
# Held desired-state requests: the longest `wait` accepted (the jitter added to it is
# `client.HELD_JITTER_FRACTION` of it).
MAX_WAIT_S = 600.0
UNSIGNED_PATHS = frozenset(
    {"/healthz", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
)
# The web console signs its visitors in itself (cookie sessions) and reaches the API
# through this middleware like any client: see vxtap.console.
CONSOLE_PREFIX = "/console"
# Path prefixes whose next segment is the project id the request acts on.
PROJECT_PREFIXES = (("v3",), ("v1",), ("internal", "v1"))

T = TypeVar("T")
D = TypeVar("D", Session, Connection)
AgentLookup = Callable[[str], Awaitable[auth.Credential | None]]


# -- authentication -----------------------------------------------------------------------


def path_project(path: str) -> str | None:
    segments = path.strip("/").split("/")
    for prefix in PROJECT_PREFIXES:
        if tuple(segments[: len(prefix)]) == prefix and len(segments) > len(prefix):
            return segments[len(prefix)]
    return None


class AuthMiddleware:
    """Verify SDK-HMAC-SHA256 before routing, so an unsigned request learns nothing.

    Pure ASGI rather than BaseHTTPMiddleware: it must read the whole body (the
    signature covers it) and hand it on unchanged, at no per-request task cost.
    """

    def __init__(
        self,
        app: ASGIApp,
        credentials: Mapping[str, auth.Credential],
        clock: Callable[[], datetime] | None = None,
        agent_lookup: AgentLookup | None = None,
    ) -> None:
        self.app = app
        self.credentials = credentials
        self.clock = clock
        self.agent_lookup = agent_lookup

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = str(uuid.uuid4())
        REQUEST_ID.set(request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        path = scope["path"]
        if (path in UNSIGNED_PATHS and scope["method"] in ("GET", "HEAD")) or (
            path.startswith(CONSOLE_PREFIX)
            and (len(path) == len(CONSOLE_PREFIX) or path[len(CONSOLE_PREFIX)] == "/")
        ):
            await self.app(scope, receive, send_with_id)
            return
        repeated = auth.repeated_header(k.decode("latin-1") for k, _ in scope["headers"])
        if repeated is not None:
            message = f"the {repeated} header appears more than once: send it once"
            await refusal_response(Unauthorized(message))(scope, receive, send_with_id)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        refusal, body = await self._read_body(headers, receive)
        if refusal is None:
            refusal = await self._authenticate(scope, headers, body)
        if refusal is not None:
            await refusal(scope, receive, send_with_id)
            return
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send_with_id)

    async def _read_body(
        self, headers: Mapping[str, str], receive: Receive
    ) -> tuple[JSONResponse | None, bytes]:
        too_large = BadRequest(f"request body is larger than {MAX_BODY_BYTES} bytes")
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            return refusal_response(too_large), b""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                return refusal_response(too_large), b""
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return None, b"".join(chunks)

    async def _credential(self, headers: Mapping[str, str]) -> auth.Credential | None:
        """The credential of the claimed access key: the credentials file's, else an
        enrolled agent's, looked up in the database on every request (so a revocation
        takes effect at once on every server process)."""
        ak = auth.access_key(headers)
        if ak is None:
            return None
        found = self.credentials.get(ak)
        if found is None and self.agent_lookup is not None:
            found = await self.agent_lookup(ak)
        return found

    async def _authenticate(
        self, scope: Scope, headers: Mapping[str, str], body: bytes
    ) -> JSONResponse | None:
        try:
            claimed = await self._credential(headers)
        except SQLAlchemyError:  # e.g. the database is locked or away: retryable, not a crash
            log.exception("looking up an access key failed")
            return refusal_response(Unavailable("the key store cannot be read right now; retry"))
        try:
            credential = auth.verify(
                scope["method"],
                scope["path"],
                scope["query_string"].decode("latin-1"),
                headers,
                body,
                lambda ak: claimed if claimed is not None and claimed.ak == ak else None,
                now=self.clock() if self.clock else None,
            )
        except auth.AuthError as exc:
            if exc.status == 401:
                return refusal_response(Unauthorized(exc.message))
            return refusal_response(Forbidden(exc.message))
        project = path_project(scope["path"])
        if project is not None and project != credential.project_id:
            return refusal_response(
                Forbidden(
                    f"access key {credential.ak} may only act on project "
                    f"{credential.project_id}, not on {project}"
                )
            )
        refused = access.refusal(credential, scope["method"], scope["path"])
        if refused is not None:
            return refusal_response(Forbidden(refused))
        scope.setdefault("state", {})["credential"] = credential
        return None


# -- request helpers ----------------------------------------------------------------------


# Set while a transaction runs on the event loop (SQLite): writes then do not wait for a lock.
ON_LOOP: ContextVar[bool] = ContextVar("on_loop", default=False)


def _lock_wait() -> float:
    return 0.0 if ON_LOOP.get() else LOCK_WAIT_S


def answer(status: int, **body: Any) -> JSONResponse:
    return JSONResponse({"request_id": REQUEST_ID.get(), **body}, status_code=status)


def no_content() -> Response:
    return Response(status_code=204)


def parse_query(
    request: Request, parsers: Mapping[str, query.QueryParser]
) -> tuple[dict[str, list[Any]], int | None, str | None]:
    """A list's filters, limit and marker; 400 if a value is bad."""
    try:
        return query.parse_query(request.query_params.multi_items(), parsers)
    except query.QueryError as exc:
        raise BadRequest(str(exc)) from None


def query_parameters(fields: Mapping[str, query.QueryParser]) -> dict[str, Any]:
    """OpenAPI description of a list's query parameters (parsed by `parse_query`)."""
    schemas: dict[query.QueryParser, dict[str, Any]] = {}
    parameters = []
    for name, parser in {**fields, **query.PAGING_QUERY}.items():
        schema = schemas.get(parser, {"type": "string"})
        if name == "limit":
            schema = {"type": "integer", "minimum": 0, "maximum": model.MAX_PAGE_SIZE}
        elif name in ("priority", "virtual_network_id", "packet_length"):
            schema = {"type": "integer"}
        elif name == "enabled":
            schema = {"type": "boolean"}
        parameters.append({"name": name, "in": "query", "required": False, "schema": schema})
    return {"parameters": parameters}


def json_body(model_type: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI request body for a route that parses its body itself."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"$ref": f"#/components/schemas/{model_type.__name__}"}
                }
            },
        }
    }


M = TypeVar("M", bound=BaseModel)


async def read_body(request: Request, model_type: type[M]) -> M:
    raw = await request.body()
    try:
        return model_type.model_validate_json(raw)
    except ValidationError as exc:
        errors_list = exc.errors(include_url=False)
        raise RequestValidationError(errors_list) from None


# -- the application ----------------------------------------------------------------------


def create_app(
    store: Store,
    credentials: Mapping[str, auth.Credential],
    *,
    agent_signing_key: bytes,
    clock: Callable[[], datetime] | None = None,
    max_rules_per_direction: int = model.DEFAULT_MAX_RULES_PER_DIRECTION,
) -> FastAPI:
    """`credentials`: the credentials file's keys; `agent_signing_key`: what enrolled
    agents' secrets derive from (`vxtap.enrolment`)."""
    held = HeldRequests(store)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await held.start()
        yield
        await held.stop()

    app = FastAPI(
        title="vxtap",
        version="0.1.0",
        description="Self-hosted VPC traffic mirroring with Huawei Cloud's traffic-mirroring API.",
        lifespan=lifespan,
    )
    app.state.held = held
    store.on_host_changes(held.committed)

    def enrolled_agent(ak: str) -> auth.Credential | None:
        with store.read_rows() as connection:
            found = hosts.agent_by_access_key(connection, ak)
        if found is None:
            return None
        project, host = found
        return auth.Credential(
            ak, enrolment.agent_secret(agent_signing_key, project, host, ak), project, host
        )

    async def agent_lookup(ak: str) -> auth.Credential | None:
        if store.dialect == "sqlite":  # inline, as the routes' SQLite transactions
            return enrolled_agent(ak)
        return await run_in_threadpool(enrolled_agent, ak)

    app.add_middleware(
        AuthMiddleware, credentials=credentials, clock=clock, agent_lookup=agent_lookup
    )
    install_error_handlers(app)

    async def revoked(credential: auth.Credential) -> bool:
        """An enrolled agent's key removed since its request was let in."""
        if credential.host is None or credential.ak in credentials:
            return False  # administrators' and the credentials file's keys stay
        return await agent_lookup(credential.ak) is None

    _install_routes(app, store, held, revoked, max_rules_per_direction)
    _install_fleet_routes(app, store, credentials, agent_signing_key, held)
    _document_bodies(app)
    mount_console(app, credentials, clock=clock)
    return app


BODY_MODELS: dict[str, type[BaseModel]] = {}


def _install_routes(
    app: FastAPI,
    store: Store,
    held: HeldRequests,
    revoked: Callable[[auth.Credential], Awaitable[bool]],
    max_rules_per_direction: int,
) -> None:
    v3 = "/v3/{project_id}/vpc"
    counters_gate = asyncio.Semaphore(1)

    def write(action: Callable[[Session], T]) -> T:
        return store.transaction(action, lock_wait=_lock_wait())

    def read(action: Callable[[Session], T]) -> T:
        return store.transaction(action, write=False)

    # SQLite transactions run on the event loop: local, and cheaper than the worker-thread
    # hop (GIL hand-offs) they would otherwise take. SQLite has one writer at a time anyway,
    # so writes in threads only queued on its lock, and the loop's time went to hand-offs:
    # inline, signed creates went from 0.25x to 0.43x of the ceiling (bench/api.py), the
    # fsync (synchronous=FULL) included. PostgreSQL waits on the network: worker threads,
    # so the loop keeps parsing and verifying other requests meanwhile.
    inline = store.dialect == "sqlite"

    def upsert(action: Callable[[Session], T]) -> T:
        return store.transaction(action, upsert=True, lock_wait=_lock_wait())

    def read_rows(action: Callable[[Connection], T]) -> T:
        """Hot-path reads (sessions): plain columns, no ORM session."""
        return store.rows_transaction(action)

    async def _run(runner: Callable[[Callable[[D], T]], T], action: Callable[[D], T]) -> T:
        if not inline:
            return await run_in_threadpool(runner, action)
        # On the loop a write never waits for another writer's lock (that would stop
        # every other request): taken, it is retried on a worker thread, which waits.
        token = ON_LOOP.set(True)
        try:
            return runner(action)
        except store_errors.Busy:
            pass
        finally:
            ON_LOOP.reset(token)
        return await run_in_threadpool(runner, action)

    def body_route(
        path: str, method: str, model_type: type[BaseModel], **kwargs: Any
    ) -> Callable[[DecoratedCallable], DecoratedCallable]:
        BODY_MODELS[f"{method} {path}"] = model_type
        return app.api_route(path, methods=[method], openapi_extra=json_body(model_type), **kwargs)

    responses_error: dict[int | str, dict[str, Any]] = {
        code: {"model": answers.ErrorAnswer} for code in (400, 401, 403, 404, 409)
    }

    # Filters ---------------------------------------------------------------------------
    @body_route(
        f"{v3}/traffic-mirror-filters",
        "POST",
        requests.CreateFilterRequest,
        status_code=201,
        responses={201: {"model": answers.FilterAnswer}, **responses_error},
        tags=["filters"],
        summary="CreateTrafficMirrorFilter",
    )
    async def create_filter(project_id: str, request: Request) -> JSONResponse:
        option = (await read_body(request, requests.CreateFilterRequest)).traffic_mirror_filter
        fields = option.model_dump()
        result = await _run(
            write, lambda db: render.filter_json(repo.create_filter(db, project_id, fields))
        )
        return answer(201, traffic_mirror_filter=result)

    @app.get(
        f"{v3}/traffic-mirror-filters",
        tags=["filters"],
        summary="ListTrafficMirrorFilters",
        openapi_extra=query_parameters(query.FILTER_QUERY),
        responses={200: {"model": answers.FilterListAnswer}, **responses_error},
    )
    async def list_filters(project_id: str, request: Request) -> JSONResponse:
        where, limit, marker = parse_query(request, query.FILTER_QUERY)

        def action(db: Session) -> tuple[list[dict[str, Any]], dict[str, Any]]:
            page = repo.list_filters(db, project_id, where, limit, marker)
            return [render.filter_json(r) for r in page.rows], page.page_info()

        items, info = await _run(read, action)
        return answer(200, traffic_mirror_filters=items, page_info=info)

    @app.get(
        f"{v3}/traffic-mirror-filters/{{filter_id}}",
        tags=["filters"],
        summary="ShowTrafficMirrorFilter",
        responses={200: {"model": answers.FilterAnswer}, **responses_error},
    )
    async def show_filter(project_id: str, filter_id: str) -> JSONResponse:
        result = await _run(
            read, lambda db: render.filter_json(repo.get_filter(db, project_id, filter_id))
        )
        return answer(200, traffic_mirror_filter=result)

    @body_route(
        f"{v3}/traffic-mirror-filters/{{filter_id}}",
        "PUT",
        requests.UpdateFilterRequest,
        tags=["filters"],
        summary="UpdateTrafficMirrorFilter",
        responses={200: {"model": answers.FilterAnswer}, **responses_error},
    )
    async def update_filter(project_id: str, filter_id: str, request: Request) -> JSONResponse:
        option = (await read_body(request, requests.UpdateFilterRequest)).traffic_mirror_filter
        fields = option.model_dump(exclude_unset=True)
        result = await _run(
            write,
            lambda db: render.filter_json(repo.update_filter(db, project_id, filter_id, fields)),
        )
        return answer(200, traffic_mirror_filter=result)

    @app.delete(
        f"{v3}/traffic-mirror-filters/{{filter_id}}",
        status_code=204,
        tags=["filters"],
        summary="DeleteTrafficMirrorFilter",
        responses=responses_error,
    )
    async def delete_filter(project_id: str, filter_id: str) -> Response:
        await _run(write, lambda db: repo.delete_filter(db, project_id, filter_id))
        return no_content()

    # Rules -----------------------------------------------------------------------------
    @body_route(
        f"{v3}/traffic-mirror-filter-rules",
        "POST",
        requests.CreateRuleRequest,
        status_code=201,
        tags=["rules"],
        summary="CreateTrafficMirrorFilterRule",
        responses={201: {"model": answers.RuleAnswer}, **responses_error},
    )
    async def create_rule(project_id: str, request: Request) -> JSONResponse:
        option = (await read_body(request, requests.CreateRuleRequest)).traffic_mirror_filter_rule
        fields = option.model_dump()
        result = await _run(
            write,
            lambda db: render.rule_json(
                repo.create_rule(db, project_id, fields, quota=max_rules_per_direction)
            ),
        )
        return answer(201, traffic_mirror_filter_rule=result)

    @app.get(
        f"{v3}/traffic-mirror-filter-rules",
        tags=["rules"],
        summary="ListTrafficMirrorFilterRules",
        openapi_extra=query_parameters(query.RULE_QUERY),
        responses={200: {"model": answers.RuleListAnswer}, **responses_error},
    )
    async def list_rules(project_id: str, request: Request) -> JSONResponse:
        where, limit, marker = parse_query(request, query.RULE_QUERY)

        def action(db: Session) -> tuple[list[dict[str, Any]], dict[str, Any]]:
            page = repo.list_rules(db, project_id, where, limit, marker)
            return [render.rule_json(r) for r in page.rows], page.page_info()

        items, info = await _run(read, action)
        return answer(200, traffic_mirror_filter_rules=items, page_info=info)

    @app.get(
        f"{v3}/traffic-mirror-filter-rules/{{rule_id}}",
        tags=["rules"],
        summary="ShowTrafficMirrorFilterRule",
        responses={200: {"model": answers.RuleAnswer}, **responses_error},
    )
    async def show_rule(project_id: str, rule_id: str) -> JSONResponse:
        result = await _run(
            read, lambda db: render.rule_json(repo.get_rule(db, project_id, rule_id))
        )
        return answer(200, traffic_mirror_filter_rule=result)

    @body_route(
        f"{v3}/traffic-mirror-filter-rules/{{rule_id}}",
        "PUT",
        requests.UpdateRuleRequest,
        tags=["rules"],
        summary="UpdateTrafficMirrorFilterRule",
        responses={200: {"model": answers.RuleAnswer}, **responses_error},
    )
    async def update_rule(project_id: str, rule_id: str, request: Request) -> JSONResponse:
        option = (await read_body(request, requests.UpdateRuleRequest)).traffic_mirror_filter_rule
        fields = option.model_dump(exclude_unset=True)
        for key in ("priority", "action", "ethertype", "protocol"):
            if key in fields and fields[key] is None:
                raise BadRequest(f"traffic_mirror_filter_rule.{key}: must not be null")
        result = await _run(
            write, lambda db: render.rule_json(repo.update_rule(db, project_id, rule_id, fields))
        )
        return answer(200, traffic_mirror_filter_rule=result)

    @app.delete(
        f"{v3}/traffic-mirror-filter-rules/{{rule_id}}",
        status_code=204,
        tags=["rules"],
        summary="DeleteTrafficMirrorFilterRule",
        responses=responses_error,
    )
    async def delete_rule(project_id: str, rule_id: str) -> Response:
        await _run(write, lambda db: repo.delete_rule(db, project_id, rule_id))
        return no_content()

    # Sessions --------------------------------------------------------------------------
    @body_route(
        f"{v3}/traffic-mirror-sessions",
        "POST",
        requests.CreateSessionRequest,
        status_code=201,
        tags=["sessions"],
        summary="CreateTrafficMirrorSession",
        responses={201: {"model": answers.SessionAnswer}, **responses_error},
    )
    async def create_session(project_id: str, request: Request) -> JSONResponse:
        option = (await read_body(request, requests.CreateSessionRequest)).traffic_mirror_session
        fields = option.model_dump()
        result = await _run(
            write,
            lambda db: _session_answer(db, project_id, repo.create_session(db, project_id, fields)),
        )
        return answer(201, traffic_mirror_session=result)

    @app.get(
        f"{v3}/traffic-mirror-sessions",
        tags=["sessions"],
        summary="ListTrafficMirrorSessions",
        openapi_extra=query_parameters(query.SESSION_QUERY),
        responses={200: {"model": answers.SessionListAnswer}, **responses_error},
    )
    async def list_sessions(project_id: str, request: Request) -> JSONResponse:
        where, limit, marker = parse_query(request, query.SESSION_QUERY)

        def action(connection: Connection) -> tuple[list[dict[str, Any]], dict[str, Any]]:
            page, sources = repo.list_sessions(connection, project_id, where, limit, marker)
            return [render.session_json(r, sources[r.id]) for r in page.rows], page.page_info()

        items, info = await _run(read_rows, action)
        return answer(200, traffic_mirror_sessions=items, page_info=info)

    @app.get(
        f"{v3}/traffic-mirror-sessions/{{session_id}}",
        tags=["sessions"],
        summary="ShowTrafficMirrorSession",
        responses={200: {"model": answers.SessionAnswer}, **responses_error},
    )
    async def show_session(project_id: str, session_id: str) -> JSONResponse:
        result = await _run(
            read_rows,
            lambda connection: render.session_json(
                *repo.show_session(connection, project_id, session_id)
            ),
        )
        return answer(200, traffic_mirror_session=result)

    @body_route(
        f"{v3}/traffic-mirror-sessions/{{session_id}}",
        "PUT",
        requests.UpdateSessionRequest,
        tags=["sessions"],
        summary="UpdateTrafficMirrorSession",
        responses={200: {"model": answers.SessionAnswer}, **responses_error},
    )
    async def update_session(project_id: str, session_id: str, request: Request) -> JSONResponse:
        option = (await read_body(request, requests.UpdateSessionRequest)).traffic_mirror_session
        fields = option.model_dump(exclude_unset=True)
        result = await _run(
            write,
            lambda db: _session_answer(
                db, project_id, repo.update_session(db, project_id, session_id, fields)
            ),
        )
        return answer(200, traffic_mirror_session=result)

    @body_route(
        f"{v3}/traffic-mirror-sessions/{{session_id}}/add-sources",
        "PUT",
        requests.SourcesRequest,
        tags=["sessions"],
        summary="AddSourcesToTrafficMirrorSession",
        responses={200: {"model": answers.SessionAnswer}, **responses_error},
    )
    async def add_sources(project_id: str, session_id: str, request: Request) -> JSONResponse:
        option = (await read_body(request, requests.SourcesRequest)).traffic_mirror_session
        sources = option.traffic_mirror_sources
        result = await _run(
            write,
            lambda db: _session_answer(
                db, project_id, repo.add_sources(db, project_id, session_id, sources)
            ),
        )
        return answer(200, traffic_mirror_session=result)

    @body_route(
        f"{v3}/traffic-mirror-sessions/{{session_id}}/remove-sources",
        "PUT",
        requests.SourcesRequest,
        tags=["sessions"],
        summary="RemoveSourcesFromTrafficMirrorSession",
        responses={200: {"model": answers.SessionAnswer}, **responses_error},
    )
    async def remove_sources(project_id: str, session_id: str, request: Request) -> JSONResponse:
        option = (await read_body(request, requests.SourcesRequest)).traffic_mirror_session
        sources = option.traffic_mirror_sources
        result = await _run(
            write,
            lambda db: _session_answer(
                db, project_id, repo.remove_sources(db, project_id, session_id, sources)
            ),
        )
        return answer(200, traffic_mirror_session=result)

    @app.delete(
        f"{v3}/traffic-mirror-sessions/{{session_id}}",
        status_code=204,
        tags=["sessions"],
        summary="DeleteTrafficMirrorSession",
        responses=responses_error,
    )
    async def delete_session(project_id: str, session_id: str) -> Response:
        await _run(write, lambda db: repo.delete_session(db, project_id, session_id))
        return no_content()

    # Ports, read-only in Huawei's v1 shape ----------------------------------------------
    @app.get(
        "/v1/{project_id}/ports",
        tags=["ports"],
        summary="ListPorts",
        openapi_extra=query_parameters(query.PORT_QUERY),
        responses=responses_error,
    )
    async def list_v1_ports(project_id: str, request: Request) -> JSONResponse:
        where, limit, marker = parse_query(request, query.PORT_QUERY)

        def action(db: Session) -> tuple[list[dict[str, Any]], dict[str, Any]]:
            page = repo.list_ports(db, project_id, where, limit, marker)
            return [render.v1_port_json(r) for r in page.rows], page.page_info()

        items, info = await _run(read, action)
        return answer(200, ports=items, page_info=info)

    @app.get(
        "/v1/{project_id}/ports/{port_id}",
        tags=["ports"],
        summary="ShowPort",
        responses=responses_error,
    )
    async def show_v1_port(project_id: str, port_id: str) -> JSONResponse:
        result = await _run(
            read, lambda db: render.v1_port_json(repo.get_port(db, project_id, port_id))
        )
        return answer(200, port=result)

    # Internal API (agents, manual ports) ------------------------------------------------
    internal = "/internal/v1/{project_id}"

    @body_route(
        f"{internal}/hosts/{{host}}/ports",
        "PUT",
        requests.RegisterPortsRequest,
        tags=["internal"],
        summary="Register or refresh a host's ports",
        responses=responses_error,
    )
    async def register_ports(project_id: str, host: str, request: Request) -> JSONResponse:
        checked_host = _path_host(host)
        ports = [
            p.model_dump() for p in (await read_body(request, requests.RegisterPortsRequest)).ports
        ]
        result = await _run(
            upsert,
            lambda db: [
                render.port_json(r)
                for r in repo.register_host_ports(db, project_id, checked_host, ports)
            ],
        )
        return answer(200, ports=result)

    @app.get(
        f"{internal}/ports",
        tags=["internal"],
        summary="List ports (internal shape)",
        openapi_extra=query_parameters(query.PORT_QUERY),
        responses=responses_error,
    )
    async def list_ports(project_id: str, request: Request) -> JSONResponse:
        where, limit, marker = parse_query(request, query.PORT_QUERY)

        def action(db: Session) -> tuple[list[dict[str, Any]], dict[str, Any]]:
            page = repo.list_ports(db, project_id, where, limit, marker)
            return [render.port_json(r) for r in page.rows], page.page_info()

        items, info = await _run(read, action)
        return answer(200, ports=items, page_info=info)

    @body_route(
        f"{internal}/ports",
        "POST",
        requests.CreatePortRequest,
        status_code=201,
        tags=["internal"],
        summary="Create a port by hand",
        responses=responses_error,
    )
    async def create_port(project_id: str, request: Request) -> JSONResponse:
        fields = (await read_body(request, requests.CreatePortRequest)).port.model_dump()
        result = await _run(
            write, lambda db: render.port_json(repo.create_port(db, project_id, fields))
        )
        return answer(201, port=result)

    @app.get(
        f"{internal}/ports/{{port_id}}",
        tags=["internal"],
        summary="Show a port",
        responses=responses_error,
    )
    async def show_port(project_id: str, port_id: str) -> JSONResponse:
        result = await _run(
            read, lambda db: render.port_json(repo.get_port(db, project_id, port_id))
        )
        return answer(200, port=result)

    @app.delete(
        f"{internal}/ports/{{port_id}}",
        status_code=204,
        tags=["internal"],
        summary="Delete a port no session names",
        responses=responses_error,
    )
    async def delete_port(project_id: str, port_id: str) -> Response:
        await _run(write, lambda db: repo.delete_port(db, project_id, port_id))
        return no_content()

    @app.get(
        f"{internal}/hosts/{{host}}/desired-state",
        tags=["internal"],
        summary="What a host's agent must program",
        responses=responses_error,
    )
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
        checked_host = _path_host(host)
        tags = _etags(request.headers.get("if-none-match"))
        loop = asyncio.get_running_loop()
        held_until = None
        if wait and tags:
            held_until = loop.time() + wait * (1 + random.uniform(0, HELD_JITTER_FRACTION))
        while True:
            action = functools.partial(
                _host_state, project=project_id, host=checked_host, tags=tuple(tags)
            )
            seen = held.generation(project_id, checked_host)  # before the read
            revision, tag, state = await _run(read_rows, action)
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
            if credential is not None and await revoked(credential):
                raise Unauthorized(f"access key {credential.ak} was revoked")
            tags = [tag]  # what the client holds, as of the state just compared

    @body_route(
        f"{internal}/hosts/{{host}}/counters",
        "PUT",
        requests.CountersRequest,
        status_code=204,
        tags=["internal"],
        summary="Report a host's counters",
        responses=responses_error,
    )
    async def put_counters(project_id: str, host: str, request: Request) -> Response:
        checked_host = _path_host(host)
        body = await read_body(request, requests.CountersRequest)
        sessions = {k: v.model_dump() for k, v in body.sessions.items()}
        rules = {k: v.model_dump() for k, v in body.rules.items()}
        # One report stored at a time per process, on a worker thread: a flood of large
        # reports queues here (and is shed with 503 past COUNTERS_QUEUE_S) instead of
        # taking the event loop or the database from every other request.
        try:
            await asyncio.wait_for(counters_gate.acquire(), COUNTERS_QUEUE_S)
        except TimeoutError:
            raise Unavailable("too many counter reports at once; retry later") from None
        try:
            await run_in_threadpool(
                upsert,
                lambda db: repo.put_counters(db, project_id, checked_host, sessions, rules),
            )
        finally:
            counters_gate.release()
        return no_content()

    @app.get(
        f"{internal}/session-stats",
        tags=["internal"],
        summary="Counters summed over hosts",
        responses=responses_error,
    )
    async def session_stats(project_id: str) -> JSONResponse:
        stats = await _run(read, lambda db: repo.session_stats(db, project_id))
        return answer(200, **stats)

    @app.get("/healthz", tags=["health"], summary="Liveness (unsigned)")
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok"})


def _install_fleet_routes(
    app: FastAPI,
    store: Store,
    credentials: Mapping[str, auth.Credential],
    agent_signing_key: bytes,
    held: HeldRequests,
) -> None:
    """Enrolment (administrators) and the agents' status reports (each agent, its host)."""
    internal = "/internal/v1/{project_id}"
    responses_error: dict[int | str, dict[str, Any]] = {
        code: {"model": answers.ErrorAnswer} for code in (400, 401, 403, 404, 409)
    }

    def static_hosts(project_id: str) -> dict[str, str]:
        """Hosts whose agent key is in the credentials file: host -> access key."""
        return {
            c.host: c.ak
            for c in credentials.values()
            if c.host is not None and c.project_id == project_id
        }

    def held_requests(project_id: str) -> frozenset[str]:
        """Hosts with a held desired-state request open on this server process (other
        processes' are not known here; docs/security.md). On the event loop's thread:
        the registry is the loop's."""
        return held.held_hosts(project_id)

    async def run(action: Callable[[Session], T], *, write: bool) -> T:
        if store.dialect == "sqlite":
            return store.transaction(action, write=write, lock_wait=LOCK_WAIT_S)
        return await run_in_threadpool(
            lambda: store.transaction(action, write=write, lock_wait=LOCK_WAIT_S)
        )

    BODY_MODELS[f"POST {internal}/hosts"] = requests.EnrolHostRequest
    BODY_MODELS[f"PUT {internal}/hosts/{{host}}/status"] = requests.HostStatusRequest

    @app.post(
        f"{internal}/hosts",
        status_code=201,
        tags=["fleet"],
        summary="Enrol a host: issue its agent's credential (shown once)",
        openapi_extra=json_body(requests.EnrolHostRequest),
        responses=responses_error,
    )
    async def enrol_host(project_id: str, request: Request) -> JSONResponse:
        host = (await read_body(request, requests.EnrolHostRequest)).host
        if host in static_hosts(project_id):
            raise store_errors.AlreadyExists(
                f"host {host} has an agent key in the server's credentials file"
            )
        ak = enrolment.new_access_key()

        def action(db: Session) -> dict[str, Any]:
            hosts.enrol_host(db, project_id, host, ak)
            return hosts.host_status(db, project_id, host, static_hosts(project_id))

        status = await run(action, write=True)
        secret = enrolment.agent_secret(agent_signing_key, project_id, host, ak)
        credential = {"ak": ak, "sk": secret, "project_id": project_id, "host": host}
        log.info("enrolled host %s of project %s (access key %s)", host, project_id, ak)
        return answer(201, host=status, credential=credential)

    @app.get(
        f"{internal}/hosts",
        tags=["fleet"],
        summary="Every host: enrolment, agent version, desired vs applied revision",
        responses=responses_error,
    )
    async def list_hosts(project_id: str) -> JSONResponse:
        held_here = held_requests(project_id)
        statuses = await run(
            lambda db: hosts.host_statuses(
                db, project_id, static_hosts(project_id), held=held_here
            ),
            write=False,
        )
        return answer(200, hosts=statuses)

    @app.get(
        f"{internal}/hosts/{{host}}",
        tags=["fleet"],
        summary="One host's status",
        responses=responses_error,
    )
    async def show_host(project_id: str, host: str) -> JSONResponse:
        checked = _path_host(host)
        held_here = held_requests(project_id)
        found = await run(
            lambda db: hosts.host_statuses(
                db, project_id, static_hosts(project_id), only=checked, held=held_here
            ),
            write=False,
        )  # fmt: skip
        if not found:
            raise store_errors.NotFound(f"host {checked} is not enrolled and has never reported")
        return answer(200, host=found[0])

    @app.delete(
        f"{internal}/hosts/{{host}}",
        status_code=204,
        tags=["fleet"],
        summary="Revoke a host's agent key at once (its ports stay)",
        responses=responses_error,
    )
    async def revoke_host(project_id: str, host: str) -> Response:
        checked = _path_host(host)
        if checked in static_hosts(project_id):
            raise store_errors.InUse(
                f"host {checked}'s agent key is in the server's credentials file: remove it "
                "there and restart the servers"
            )
        await run(lambda db: hosts.revoke_host(db, project_id, checked), write=True)
        log.info("revoked host %s of project %s", checked, project_id)
        return no_content()

    @app.put(
        f"{internal}/hosts/{{host}}/status",
        status_code=204,
        tags=["fleet"],
        summary="An agent reports what it applied",
        openapi_extra=json_body(requests.HostStatusRequest),
        responses=responses_error,
    )
    async def put_status(project_id: str, host: str, request: Request) -> Response:
        checked = _path_host(host)
        fields = (await read_body(request, requests.HostStatusRequest)).model_dump()
        await run(lambda db: hosts.put_status(db, project_id, checked, fields), write=True)
        return no_content()


def _session_answer(db: Session, project_id: str, row: SessionRow) -> dict[str, Any]:
    """A session as answered after a write: read back like every session answer."""
    return render.session_json(*repo.show_session(db.connection(), project_id, row.id))


def _host_state(
    db: Connection, *, project: str, host: str, tags: tuple[str, ...]
) -> tuple[int, str, dict[str, Any] | None]:
    """(host revision, ETag, state); the state is None, not built, when a tag names the
    host's current revision."""
    revision = repo.host_revision(db, project, host)
    prefix = f"h{revision}"
    for tag in tags:
        if tag.partition("-")[0] == prefix:
            return revision, tag, None
    state = repo.desired_state(db, project, host)
    return revision, f"{prefix}-{state['revision']}", state


def _etags(if_none_match: str | None) -> list[str]:
    """RFC 9110 13.1.2: the listed entity tags without quotes, compared weakly (a `W/`
    prefix ignored); `*` stays `*`. Anything unparsable simply matches nothing."""
    if not if_none_match:
        return []
    tags = (t.strip().removeprefix("W/") for t in if_none_match.split(","))
    return [t if t == "*" else t.strip('"') for t in tags if t]


def _path_host(host: str) -> str:
    try:
        return fields.parse_host(host)
    except ValueError as exc:
        raise BadRequest(f"host: {exc}") from None


def _document_bodies(app: FastAPI) -> None:
    """Add the request-body models to the OpenAPI components the routes refer to."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = original()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model_type in set(BODY_MODELS.values()):
            generated = model_type.model_json_schema(ref_template="#/components/schemas/{model}")
            for name, definition in generated.pop("$defs", {}).items():
                components.setdefault(name, definition)
            components[model_type.__name__] = generated
        # FastAPI documents a 422 for every route with parameters; this API answers 400.
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                if operation.get("responses", {}).pop("422", None) is not None:
                    operation["responses"].setdefault(
                        "400",
                        {
                            "description": "Bad input",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/ErrorAnswer"}
                                }
                            },
                        },
                    )
        for name in ("HTTPValidationError", "ValidationError"):
            components.pop(name, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
