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
    DataError,
    DBAPIError,
    IntegrityError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vxtap import auth, enrolment, model
from vxtap.api import access, wire
from vxtap.api.held import MAX_WAIT_S, HeldRenewals, HeldRequests, etags
from vxtap.client import HELD_JITTER_FRACTION
from vxtap.console import mount_console
from vxtap.store import errors, hosts
from vxtap.store import repository as repo
from vxtap.store.db import Store, is_locked, violated_constraint
from vxtap.store.schema import SessionRow

log = logging.getLogger("vxtap.api")

MAX_BODY_BYTES = 1 << 20
# SQLite: how long a write waits for another writer's lock before answering 503. The
# wait happens on a worker thread, never on the event loop (see `_install_routes`).
LOCK_WAIT_S = 5.0
# How long a counter report may queue behind others before it is refused (503; the
# agent reports again later).
COUNTERS_QUEUE_S = 2.0
REQUEST_ID: ContextVar[str] = ContextVar("request_id", default="")
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


def error_body(message: str, code: str) -> dict[str, str]:
    return {"request_id": REQUEST_ID.get(), "error_msg": message, "error_code": code}


def error_response(status: int, message: str, code: str) -> JSONResponse:
    return JSONResponse(error_body(message, code), status_code=status)


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
            await error_response(401, message, errors.Unauthorized.code)(
                scope, receive, send_with_id
            )
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
        too_large = errors.BadInput(f"request body is larger than {MAX_BODY_BYTES} bytes")
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            return error_response(400, too_large.message, too_large.code), b""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                return error_response(400, too_large.message, too_large.code), b""
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
            return error_response(503, "the key store cannot be read right now; retry", "VPC.0503")
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
            code = errors.Unauthorized.code if exc.status == 401 else errors.Forbidden.code
            return error_response(exc.status, exc.message, code)
        project = path_project(scope["path"])
        if project is not None and project != credential.project_id:
            return error_response(
                403,
                f"access key {credential.ak} may only act on project {credential.project_id}, "
                f"not on {project}",
                errors.Forbidden.code,
            )
        refused = access.refusal(credential, scope["method"], scope["path"])
        if refused is not None:
            return error_response(403, refused, errors.Forbidden.code)
        scope.setdefault("state", {})["credential"] = credential
        return None


# -- request helpers ----------------------------------------------------------------------


def validation_message(exc: RequestValidationError) -> str:
    """One line naming each bad field, from pydantic's errors (FastAPI's 422 never leaks)."""
    parts: list[str] = []
    for error in exc.errors():
        location = [str(p) for p in error.get("loc", ()) if p != "body"]
        kind = error.get("type", "")
        message = str(error.get("msg", "")).removeprefix("Value error, ")
        if kind == "json_invalid":
            parts.append(
                f"request body is not valid JSON ({error.get('ctx', {}).get('error', '')})"
            )
            continue
        field = ".".join(location)
        if kind == "missing":
            if len(location) == 1:  # the envelope itself
                parts.append(f"the body must be a JSON object {{{location[0]!r}: {{...}}}}")
            else:
                parts.append(f"{field}: required")
            continue
        if kind == "extra_forbidden":
            hint = wire.FIXED_FIELDS.get(tuple(location[-2:]))
            parts.append(f"{field}: {hint or 'is not a field of this request'}")
            continue
        if kind in ("model_type", "model_attributes_type", "dict_type"):
            parts.append(f"{field or 'request body'}: must be a JSON object")
            continue
        parts.append(f"{field}: {message}" if field else message)
    return "; ".join(parts) or "invalid request"


def conflict_for(name: str | None) -> errors.ApiError | None:
    """The refusal for a constraint the database enforced (a check raced a concurrent
    write), or None for a constraint no refusal words."""
    known: dict[str, errors.ApiError] = {
        "uq_rules_priority": errors.Conflict(
            "priority is already used by another rule of this filter and direction",
            errors.DUPLICATE_PRIORITY,
        ),
        "uq_sources_port_priority": errors.Conflict(
            "priority is already used by another session sharing a source",
            errors.DUPLICATE_PRIORITY,
        ),
        "uq_sources_port_slot": errors.Conflict(
            f"a port can be a source of at most {model.MAX_SESSIONS_PER_SOURCE} sessions",
            errors.QUOTA,
        ),
        "ck_sources_slot": errors.Conflict(
            f"a port can be a source of at most {model.MAX_SESSIONS_PER_SOURCE} sessions",
            errors.QUOTA,
        ),
        "uq_sources_session_position": errors.Conflict(
            f"a session can have at most {model.MAX_SOURCES_PER_SESSION} sources", errors.QUOTA
        ),
        "ck_sources_position": errors.Conflict(
            f"a session can have at most {model.MAX_SOURCES_PER_SESSION} sources", errors.QUOTA
        ),
        "ck_sources_not_target": errors.BadInput(
            "a source and the target of one session must be different ports"
        ),
        "uq_ports_host_device": errors.Conflict(
            "a port with this host and device exists", errors.EXISTS
        ),
    }
    return known.get(name or "")


def concurrent_change() -> errors.Conflict:
    return errors.Conflict(
        "the request kept conflicting with concurrent changes (another request took the "
        "same slot or key each time); retry",
        errors.CONCURRENT,
    )


def is_foreign_key(name: str | None) -> bool:
    """A reference that was there when checked and gone at the write (or the reverse, for
    a delete): a retry runs the repository's checks again, which then word the refusal
    (404 for a missing reference, 409 in use)."""
    return name is not None and (name == "foreign_key" or name.startswith("fk_"))


# Deadlock / serialization failure (PostgreSQL SQLSTATE): the transaction can simply be retried.
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})
# Constraints that a retry can satisfy: slots and positions chosen from a snapshot another
# transaction changed meanwhile.
RETRYABLE_CONSTRAINTS = frozenset({"uq_sources_port_slot", "uq_sources_session_position"})


def unstorable(error: DataError) -> errors.BadInput:
    """A value the database cannot hold that validation let through (e.g. NUL in a path
    id on PostgreSQL): the client's input, not a server fault."""
    return errors.BadInput(f"a value cannot be stored: {error.orig}")


# Set while a transaction runs on the event loop (SQLite): writes then do not wait for a lock.
ON_LOOP: ContextVar[bool] = ContextVar("on_loop", default=False)


def _lock_wait() -> float:
    return 0.0 if ON_LOOP.get() else LOCK_WAIT_S


def in_transaction(
    store: Store,
    action: Callable[[Session], T],
    *,
    write: bool = True,
    retry_constraints: frozenset[str] = RETRYABLE_CONSTRAINTS,
    lock_wait: float = LOCK_WAIT_S,
) -> T:
    """Run `action` in one transaction; map constraint violations to Huawei refusals, and
    a database lock that stayed taken past `lock_wait` seconds (SQLite) to 503.

    A violation no refusal words and no retry can cure is a check the repository lacks:
    it is re-raised (500, logged), never passed off as a concurrent change.
    """
    attempts = 5
    for attempt in range(attempts):
        try:
            with store.write(lock_wait=lock_wait) if write else store.read() as db:
                return action(db)
        except OperationalError as exc:
            if is_locked(exc):
                raise errors.Busy(
                    "the database is busy (another writer holds its lock); retry"
                ) from exc
            raise
        except IntegrityError as exc:
            name = violated_constraint(exc)
            retryable = name in retry_constraints or is_foreign_key(name)
            if retryable and attempt < attempts - 1:
                continue
            refusal = conflict_for(name)
            if refusal is not None:
                raise refusal from exc
            if name in retry_constraints:
                raise concurrent_change() from exc
            raise
        except DataError as exc:
            raise unstorable(exc) from exc
        except DBAPIError as exc:
            sqlstate = getattr(exc.orig, "sqlstate", None)
            if sqlstate in RETRYABLE_SQLSTATES and attempt < attempts - 1:
                continue
            raise
    raise AssertionError("unreachable")


def answer(status: int, **body: Any) -> JSONResponse:
    return JSONResponse({"request_id": REQUEST_ID.get(), **body}, status_code=status)


def no_content() -> Response:
    return Response(status_code=204)


QueryParser = Callable[[str], Any]


def _query_time(text: str) -> datetime:
    try:
        return datetime.strptime(text, wire.TIME_FORMAT)
    except ValueError:
        raise ValueError(f"must be a UTC time like 2024-09-10T09:54:28Z, got {text!r}") from None


def _query_required(parse: Callable[[Any], Any]) -> QueryParser:
    def checked(text: str) -> Any:
        value = parse(text)
        if value is None:
            raise ValueError(f"must not be empty, got {text!r}")
        return value

    return checked


def _text(text: str) -> str:
    if "\x00" in text:
        raise ValueError("must not contain NUL")
    return text


FILTER_QUERY: dict[str, QueryParser] = {
    "id": _text,
    "name": _text,
    "description": _text,
    "created_at": _query_time,
    "updated_at": _query_time,
}
RULE_QUERY: dict[str, QueryParser] = {
    "id": _text,
    "description": _text,
    "traffic_mirror_filter_id": _text,
    "direction": wire.canonical(model.Direction),
    "protocol": wire.canonical(model.Protocol),
    "ethertype": wire.canonical(model.EtherType),
    "source_cidr_block": _query_required(wire.parse_cidr),
    "destination_cidr_block": _query_required(wire.parse_cidr),
    "source_port_range": _query_required(wire.parse_port_range),
    "destination_port_range": _query_required(wire.parse_port_range),
    "action": wire.canonical(model.Action),
    "priority": wire.integer_parser(1, 65535),
}
SESSION_QUERY: dict[str, QueryParser] = {
    "id": _text,
    "name": _text,
    "description": _text,
    "traffic_mirror_filter_id": _text,
    "traffic_mirror_target_id": _text,
    "traffic_mirror_target_type": _text,
    "virtual_network_id": wire.integer_parser(0, 16_777_215),
    "packet_length": wire.integer_parser(1, 1460),
    "priority": wire.integer_parser(1, 32766),
    "enabled": wire.parse_boolean,
    "type": _text,
    "created_at": _query_time,
    "updated_at": _query_time,
}
PORT_QUERY: dict[str, QueryParser] = {
    "id": _text,
    "name": _text,
    "mac_address": _text,
    "binding:host_id": _text,
}
PAGING_QUERY: dict[str, QueryParser] = {
    "limit": wire.integer_parser(0, repo.MAX_LIMIT),
    "marker": _text,
}


def parse_query(
    request: Request, fields: Mapping[str, QueryParser]
) -> tuple[dict[str, list[Any]], int | None, str | None]:
    """List filters (repeating a key means any of the values), limit and marker; 400 if bad."""
    where: dict[str, list[Any]] = {}
    limit: int | None = None
    marker: str | None = None
    for key, text in request.query_params.multi_items():
        try:
            if key == "limit":
                limit = PAGING_QUERY["limit"](text)
            elif key == "marker":
                marker = text or None
            elif key in fields:
                where.setdefault(key, []).append(fields[key](text))
        except ValueError as exc:
            raise errors.BadInput(f"query parameter {key}: {exc}") from None
    return where, limit, marker


def query_parameters(fields: Mapping[str, QueryParser]) -> dict[str, Any]:
    """OpenAPI description of a list's query parameters (parsed by `parse_query`)."""
    schemas: dict[QueryParser, dict[str, Any]] = {}
    parameters = []
    for name, parser in {**fields, **PAGING_QUERY}.items():
        schema = schemas.get(parser, {"type": "string"})
        if name == "limit":
            schema = {"type": "integer", "minimum": 0, "maximum": repo.MAX_LIMIT}
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
            # Remembered until its host's revision moves (revoking moves it): vxtap.api.held
            found = held.cached_agent(ak)
            if found is None:
                found = enrolled_agent(ak)
                if found is not None:
                    held.remember_agent(found)
            return found
        return await run_in_threadpool(enrolled_agent, ak)

    async def revoked(credential: auth.Credential) -> bool:
        """An enrolled agent's key removed since its request was let in."""
        if credential.host is None or credential.ak in credentials:
            return False  # administrators' and the credentials file's keys stay
        return await agent_lookup(credential.ak) is None

    # Added before AuthMiddleware, so it runs after it (the last added runs first): a
    # renewal it answers was signed and allowed like any request.
    app.add_middleware(
        HeldRenewals,
        held=held,
        revoked=revoked,
        refuse=lambda exc: error_response(exc.status, exc.message, exc.code),
    )
    app.add_middleware(
        AuthMiddleware, credentials=credentials, clock=clock, agent_lookup=agent_lookup
    )
    _install_error_handlers(app)

    _install_routes(app, store, held, revoked, max_rules_per_direction)
    _install_fleet_routes(app, store, credentials, agent_signing_key, held)
    _document_bodies(app)
    mount_console(app, credentials, clock=clock)
    return app


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def on_validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(400, validation_message(exc), errors.BadInput.code)

    @app.exception_handler(errors.ApiError)
    async def on_refusal(_request: Request, exc: errors.ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.code)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            return error_response(404, f"no such API: {request.url.path}", errors.NotFound.code)
        if exc.status_code == 405:
            return error_response(
                405, f"method {request.method} is not allowed on {request.url.path}", "VPC.0405"
            )
        return error_response(exc.status_code, str(exc.detail), f"VPC.0{exc.status_code}")

    @app.exception_handler(Exception)
    async def on_crash(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error", exc_info=exc)
        return error_response(500, "internal server error; see the server log", "VPC.0500")


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
        return in_transaction(store, action, lock_wait=_lock_wait())

    def read(action: Callable[[Session], T]) -> T:
        return in_transaction(store, action, write=False)

    # SQLite transactions run on the event loop: local, and cheaper than the worker-thread
    # hop (GIL hand-offs) they would otherwise take. SQLite has one writer at a time anyway,
    # so writes in threads only queued on its lock, and the loop's time went to hand-offs:
    # inline, signed creates went from 0.25x to 0.43x of the ceiling (bench/api.py), the
    # fsync (synchronous=FULL) included. PostgreSQL waits on the network: worker threads,
    # so the loop keeps parsing and verifying other requests meanwhile.
    inline = store.dialect == "sqlite"

    def upsert(action: Callable[[Session], T]) -> T:
        """Create-or-update writes: two concurrent first inserts of one key race on the
        primary or unique key; the loser's retry finds the row and updates it."""
        return in_transaction(
            store,
            action,
            retry_constraints=frozenset(
                {"uq_ports_host_device", "pk_ports", "pk_host_reports", "pk_counters"}
            ),
            lock_wait=_lock_wait(),
        )

    def read_rows(action: Callable[[Connection], T]) -> T:
        """Hot-path reads (sessions): plain columns, no ORM session."""
        try:
            with store.read_rows() as connection:
                return action(connection)
        except DataError as exc:
            raise unstorable(exc) from exc

    async def _run(runner: Callable[[Callable[[D], T]], T], action: Callable[[D], T]) -> T:
        if not inline:
            return await run_in_threadpool(runner, action)
        # On the loop a write never waits for another writer's lock (that would stop
        # every other request): taken, it is retried on a worker thread, which waits.
        token = ON_LOOP.set(True)
        try:
            return runner(action)
        except errors.Busy:
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
        code: {"model": wire.ErrorAnswer} for code in (400, 401, 403, 404, 409)
    }

    # Filters ---------------------------------------------------------------------------
    @body_route(
        f"{v3}/traffic-mirror-filters",
        "POST",
        wire.CreateFilterRequest,
        status_code=201,
        responses={201: {"model": wire.FilterAnswer}, **responses_error},
        tags=["filters"],
        summary="CreateTrafficMirrorFilter",
    )
    async def create_filter(project_id: str, request: Request) -> JSONResponse:
        option = (await read_body(request, wire.CreateFilterRequest)).traffic_mirror_filter
        fields = option.model_dump()
        result = await _run(
            write, lambda db: wire.filter_json(repo.create_filter(db, project_id, fields))
        )
        return answer(201, traffic_mirror_filter=result)

    @app.get(
        f"{v3}/traffic-mirror-filters",
        tags=["filters"],
        summary="ListTrafficMirrorFilters",
        openapi_extra=query_parameters(FILTER_QUERY),
        responses={200: {"model": wire.FilterListAnswer}, **responses_error},
    )
    async def list_filters(project_id: str, request: Request) -> JSONResponse:
        where, limit, marker = parse_query(request, FILTER_QUERY)

        def action(db: Session) -> tuple[list[dict[str, Any]], dict[str, Any]]:
            page = repo.list_filters(db, project_id, where, limit, marker)
            return [wire.filter_json(r) for r in page.rows], page.page_info()

        items, info = await _run(read, action)
        return answer(200, traffic_mirror_filters=items, page_info=info)

    @app.get(
        f"{v3}/traffic-mirror-filters/{{filter_id}}",
        tags=["filters"],
        summary="ShowTrafficMirrorFilter",
        responses={200: {"model": wire.FilterAnswer}, **responses_error},
    )
    async def show_filter(project_id: str, filter_id: str) -> JSONResponse:
        result = await _run(
            read, lambda db: wire.filter_json(repo.get_filter(db, project_id, filter_id))
        )
        return answer(200, traffic_mirror_filter=result)

    @body_route(
        f"{v3}/traffic-mirror-filters/{{filter_id}}",
        "PUT",
        wire.UpdateFilterRequest,
        tags=["filters"],
        summary="UpdateTrafficMirrorFilter",
        responses={200: {"model": wire.FilterAnswer}, **responses_error},
    )
    async def update_filter(project_id: str, filter_id: str, request: Request) -> JSONResponse:
        option = (await read_body(request, wire.UpdateFilterRequest)).traffic_mirror_filter
        fields = option.model_dump(exclude_unset=True)
        result = await _run(
            write,
            lambda db: wire.filter_json(repo.update_filter(db, project_id, filter_id, fields)),
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
        wire.CreateRuleRequest,
        status_code=201,
        tags=["rules"],
        summary="CreateTrafficMirrorFilterRule",
        responses={201: {"model": wire.RuleAnswer}, **responses_error},
    )
    async def create_rule(project_id: str, request: Request) -> JSONResponse:
        option = (await read_body(request, wire.CreateRuleRequest)).traffic_mirror_filter_rule
        fields = option.model_dump()
        result = await _run(
            write,
            lambda db: wire.rule_json(
                repo.create_rule(db, project_id, fields, quota=max_rules_per_direction)
            ),
        )
        return answer(201, traffic_mirror_filter_rule=result)

    @app.get(
        f"{v3}/traffic-mirror-filter-rules",
        tags=["rules"],
        summary="ListTrafficMirrorFilterRules",
        openapi_extra=query_parameters(RULE_QUERY),
        responses={200: {"model": wire.RuleListAnswer}, **responses_error},
    )
    async def list_rules(project_id: str, request: Request) -> JSONResponse:
        where, limit, marker = parse_query(request, RULE_QUERY)

        def action(db: Session) -> tuple[list[dict[str, Any]], dict[str, Any]]:
            page = repo.list_rules(db, project_id, where, limit, marker)
            return [wire.rule_json(r) for r in page.rows], page.page_info()

        items, info = await _run(read, action)
        return answer(200, traffic_mirror_filter_rules=items, page_info=info)

    @app.get(
        f"{v3}/traffic-mirror-filter-rules/{{rule_id}}",
        tags=["rules"],
        summary="ShowTrafficMirrorFilterRule",
        responses={200: {"model": wire.RuleAnswer}, **responses_error},
    )
    async def show_rule(project_id: str, rule_id: str) -> JSONResponse:
        result = await _run(read, lambda db: wire.rule_json(repo.get_rule(db, project_id, rule_id)))
        return answer(200, traffic_mirror_filter_rule=result)

    @body_route(
        f"{v3}/traffic-mirror-filter-rules/{{rule_id}}",
        "PUT",
        wire.UpdateRuleRequest,
        tags=["rules"],
        summary="UpdateTrafficMirrorFilterRule",
        responses={200: {"model": wire.RuleAnswer}, **responses_error},
    )
    async def update_rule(project_id: str, rule_id: str, request: Request) -> JSONResponse:
        option = (await read_body(request, wire.UpdateRuleRequest)).traffic_mirror_filter_rule
        fields = option.model_dump(exclude_unset=True)
        for key in ("priority", "action", "ethertype", "protocol"):
            if key in fields and fields[key] is None:
                raise errors.BadInput(f"traffic_mirror_filter_rule.{key}: must not be null")
        result = await _run(
            write, lambda db: wire.rule_json(repo.update_rule(db, project_id, rule_id, fields))
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
        wire.CreateSessionRequest,
        status_code=201,
        tags=["sessions"],
        summary="CreateTrafficMirrorSession",
        responses={201: {"model": wire.SessionAnswer}, **responses_error},
    )
    async def create_session(project_id: str, request: Request) -> JSONResponse:
        option = (await read_body(request, wire.CreateSessionRequest)).traffic_mirror_session
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
        openapi_extra=query_parameters(SESSION_QUERY),
        responses={200: {"model": wire.SessionListAnswer}, **responses_error},
    )
    async def list_sessions(project_id: str, request: Request) -> JSONResponse:
        where, limit, marker = parse_query(request, SESSION_QUERY)

        def action(connection: Connection) -> tuple[list[dict[str, Any]], dict[str, Any]]:
            page, sources = repo.list_sessions(connection, project_id, where, limit, marker)
            return [wire.session_json(r, sources[r.id]) for r in page.rows], page.page_info()

        items, info = await _run(read_rows, action)
        return answer(200, traffic_mirror_sessions=items, page_info=info)

    @app.get(
        f"{v3}/traffic-mirror-sessions/{{session_id}}",
        tags=["sessions"],
        summary="ShowTrafficMirrorSession",
        responses={200: {"model": wire.SessionAnswer}, **responses_error},
    )
    async def show_session(project_id: str, session_id: str) -> JSONResponse:
        result = await _run(
            read_rows,
            lambda connection: wire.session_json(
                *repo.show_session(connection, project_id, session_id)
            ),
        )
        return answer(200, traffic_mirror_session=result)

    @body_route(
        f"{v3}/traffic-mirror-sessions/{{session_id}}",
        "PUT",
        wire.UpdateSessionRequest,
        tags=["sessions"],
        summary="UpdateTrafficMirrorSession",
        responses={200: {"model": wire.SessionAnswer}, **responses_error},
    )
    async def update_session(project_id: str, session_id: str, request: Request) -> JSONResponse:
        option = (await read_body(request, wire.UpdateSessionRequest)).traffic_mirror_session
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
        wire.SourcesRequest,
        tags=["sessions"],
        summary="AddSourcesToTrafficMirrorSession",
        responses={200: {"model": wire.SessionAnswer}, **responses_error},
    )
    async def add_sources(project_id: str, session_id: str, request: Request) -> JSONResponse:
        option = (await read_body(request, wire.SourcesRequest)).traffic_mirror_session
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
        wire.SourcesRequest,
        tags=["sessions"],
        summary="RemoveSourcesFromTrafficMirrorSession",
        responses={200: {"model": wire.SessionAnswer}, **responses_error},
    )
    async def remove_sources(project_id: str, session_id: str, request: Request) -> JSONResponse:
        option = (await read_body(request, wire.SourcesRequest)).traffic_mirror_session
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
        openapi_extra=query_parameters(PORT_QUERY),
        responses=responses_error,
    )
    async def list_v1_ports(project_id: str, request: Request) -> JSONResponse:
        where, limit, marker = parse_query(request, PORT_QUERY)

        def action(db: Session) -> tuple[list[dict[str, Any]], dict[str, Any]]:
            page = repo.list_ports(db, project_id, where, limit, marker)
            return [wire.v1_port_json(r) for r in page.rows], page.page_info()

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
            read, lambda db: wire.v1_port_json(repo.get_port(db, project_id, port_id))
        )
        return answer(200, port=result)

    # Internal API (agents, manual ports) ------------------------------------------------
    internal = "/internal/v1/{project_id}"

    @body_route(
        f"{internal}/hosts/{{host}}/ports",
        "PUT",
        wire.RegisterPortsRequest,
        tags=["internal"],
        summary="Register or refresh a host's ports",
        responses=responses_error,
    )
    async def register_ports(project_id: str, host: str, request: Request) -> JSONResponse:
        checked_host = _path_host(host)
        ports = [
            p.model_dump() for p in (await read_body(request, wire.RegisterPortsRequest)).ports
        ]
        result = await _run(
            upsert,
            lambda db: [
                wire.port_json(r)
                for r in repo.register_host_ports(db, project_id, checked_host, ports)
            ],
        )
        return answer(200, ports=result)

    @app.get(
        f"{internal}/ports",
        tags=["internal"],
        summary="List ports (internal shape)",
        openapi_extra=query_parameters(PORT_QUERY),
        responses=responses_error,
    )
    async def list_ports(project_id: str, request: Request) -> JSONResponse:
        where, limit, marker = parse_query(request, PORT_QUERY)

        def action(db: Session) -> tuple[list[dict[str, Any]], dict[str, Any]]:
            page = repo.list_ports(db, project_id, where, limit, marker)
            return [wire.port_json(r) for r in page.rows], page.page_info()

        items, info = await _run(read, action)
        return answer(200, ports=items, page_info=info)

    @body_route(
        f"{internal}/ports",
        "POST",
        wire.CreatePortRequest,
        status_code=201,
        tags=["internal"],
        summary="Create a port by hand",
        responses=responses_error,
    )
    async def create_port(project_id: str, request: Request) -> JSONResponse:
        fields = (await read_body(request, wire.CreatePortRequest)).port.model_dump()
        result = await _run(
            write, lambda db: wire.port_json(repo.create_port(db, project_id, fields))
        )
        return answer(201, port=result)

    @app.get(
        f"{internal}/ports/{{port_id}}",
        tags=["internal"],
        summary="Show a port",
        responses=responses_error,
    )
    async def show_port(project_id: str, port_id: str) -> JSONResponse:
        result = await _run(read, lambda db: wire.port_json(repo.get_port(db, project_id, port_id)))
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
                revision, tag, state = await _run(read_rows, action)
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
            if credential is not None and await revoked(credential):
                raise errors.Unauthorized(f"access key {credential.ak} was revoked")
            tags = [tag]  # what the client holds, as of the state just compared

    @body_route(
        f"{internal}/hosts/{{host}}/counters",
        "PUT",
        wire.CountersRequest,
        status_code=204,
        tags=["internal"],
        summary="Report a host's counters",
        responses=responses_error,
    )
    async def put_counters(project_id: str, host: str, request: Request) -> Response:
        checked_host = _path_host(host)
        body = await read_body(request, wire.CountersRequest)
        sessions = {k: v.model_dump() for k, v in body.sessions.items()}
        rules = {k: v.model_dump() for k, v in body.rules.items()}
        # One report stored at a time per process, on a worker thread: a flood of large
        # reports queues here (and is shed with 503 past COUNTERS_QUEUE_S) instead of
        # taking the event loop or the database from every other request.
        try:
            await asyncio.wait_for(counters_gate.acquire(), COUNTERS_QUEUE_S)
        except TimeoutError:
            raise errors.Busy("too many counter reports at once; retry later") from None
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
        code: {"model": wire.ErrorAnswer} for code in (400, 401, 403, 404, 409)
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
            return in_transaction(store, action, write=write)
        return await run_in_threadpool(lambda: in_transaction(store, action, write=write))

    BODY_MODELS[f"POST {internal}/hosts"] = wire.EnrolHostRequest
    BODY_MODELS[f"PUT {internal}/hosts/{{host}}/status"] = wire.HostStatusRequest

    @app.post(
        f"{internal}/hosts",
        status_code=201,
        tags=["fleet"],
        summary="Enrol a host: issue its agent's credential (shown once)",
        openapi_extra=json_body(wire.EnrolHostRequest),
        responses=responses_error,
    )
    async def enrol_host(project_id: str, request: Request) -> JSONResponse:
        host = (await read_body(request, wire.EnrolHostRequest)).host
        if host in static_hosts(project_id):
            raise errors.Conflict(
                f"host {host} has an agent key in the server's credentials file", errors.EXISTS
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
                db, project_id, static_hosts(project_id), held=held_here, built=held.built
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
                db, project_id, static_hosts(project_id), only=checked, held=held_here,
                built=held.built,
            ),
            write=False,
        )  # fmt: skip
        if not found:
            raise errors.NotFound(f"host {checked} is not enrolled and has never reported")
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
            raise errors.Conflict(
                f"host {checked}'s agent key is in the server's credentials file: remove it "
                "there and restart the servers",
                errors.IN_USE,
            )
        await run(lambda db: hosts.revoke_host(db, project_id, checked), write=True)
        log.info("revoked host %s of project %s", checked, project_id)
        return no_content()

    @app.put(
        f"{internal}/hosts/{{host}}/status",
        status_code=204,
        tags=["fleet"],
        summary="An agent reports what it applied",
        openapi_extra=json_body(wire.HostStatusRequest),
        responses=responses_error,
    )
    async def put_status(project_id: str, host: str, request: Request) -> Response:
        checked = _path_host(host)
        fields = (await read_body(request, wire.HostStatusRequest)).model_dump()
        await run(lambda db: hosts.put_status(db, project_id, checked, fields), write=True)
        return no_content()


def _session_answer(db: Session, project_id: str, row: SessionRow) -> dict[str, Any]:
    """A session as answered after a write: read back like every session answer."""
    return wire.session_json(*repo.show_session(db.connection(), project_id, row.id))


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


def _path_host(host: str) -> str:
    try:
        return wire.parse_host(host)
    except ValueError as exc:
        raise errors.BadInput(f"host: {exc}") from None


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
