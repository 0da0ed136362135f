"""What every route shares: its context, the error responses it documents, reading a
body or a query, and answering in Huawei's envelope."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError

from vxtap import auth
from vxtap.api.db import Database
from vxtap.api.errors import REQUEST_ID, BadRequest
from vxtap.api.held import HeldRequests
from vxtap.wire import answers, fields, query

M = TypeVar("M", bound=BaseModel)

V3 = "/v3/{project_id}/vpc"
INTERNAL = "/internal/v1/{project_id}"
# Every router documents these refusals (`vxtap.api.errors`).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": answers.ErrorAnswer} for code in (400, 401, 403, 404, 409)
}


@dataclass
class ApiContext:
    """What the routes of one application share (`app.state.api`)."""

    database: Database
    held: HeldRequests
    # An enrolled agent's key removed since its request was let in.
    revoked: Callable[[auth.Credential], Awaitable[bool]]
    credentials: Mapping[str, auth.Credential]
    agent_signing_key: bytes
    max_rules_per_direction: int
    # One counter report stored at a time per process (`routes.internal.put_counters`).
    counters_gate: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(1))


def context(request: Request) -> ApiContext:
    return cast(ApiContext, request.app.state.api)


def answer(status: int, **body: Any) -> JSONResponse:
    return JSONResponse({"request_id": REQUEST_ID.get(), **body}, status_code=status)


def no_content() -> Response:
    return Response(status_code=204)


async def read_body(request: Request, model_type: type[M]) -> M:
    """The body validated from its bytes in one step; refusals word it like FastAPI's own
    validation (`errors.validation_message`)."""
    raw = await request.body()
    try:
        return model_type.model_validate_json(raw)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from None


def parse_query(
    request: Request, parsers: Mapping[str, query.QueryParser]
) -> tuple[dict[str, list[Any]], int | None, str | None]:
    """A list's filters, limit and marker; 400 if a value is bad."""
    try:
        return query.parse_query(request.query_params.multi_items(), parsers)
    except query.QueryError as exc:
        raise BadRequest(str(exc)) from None


def path_host(host: str) -> str:
    try:
        return fields.parse_host(host)
    except ValueError as exc:
        raise BadRequest(f"host: {exc}") from None
