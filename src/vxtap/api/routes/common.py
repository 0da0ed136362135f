"""What every route shares: its context, the error responses it documents, reading a
body or a query, and answering in Huawei's envelope."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError
from sqlalchemy.orm import Session

from vxtap import auth
from vxtap.api.db import Database
from vxtap.api.errors import REQUEST_ID, BadRequest
from vxtap.api.held import HeldRequests
from vxtap.store.common import RowPage
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
    request: Request, keys: Mapping[str, query.QueryField]
) -> tuple[dict[str, list[Any]], int | None, str | None]:
    """A list's filters, limit and marker; 400 if a value is bad."""
    try:
        return query.parse_query(request.query_params.multi_items(), keys)
    except query.QueryError as exc:
        raise BadRequest(str(exc)) from None


# A store's list function: (session, project, filters, limit, marker) -> one page.
ListRows = Callable[[Session, str, Mapping[str, Sequence[Any]], int | None, str | None], RowPage]


async def list_answer(
    request: Request,
    project_id: str,
    keys: Mapping[str, query.QueryField],
    list_rows: ListRows,
    render_row: Callable[[Any], dict[str, Any]],
    *,
    key: str,
) -> JSONResponse:
    """One page of a list, rendered, in the envelope `{key: [...], "page_info": ...}`."""
    where, limit, marker = parse_query(request, keys)

    def action(s: Session) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        page = list_rows(s, project_id, where, limit, marker)
        return [render_row(r) for r in page.rows], page.page_info()

    db = context(request).database
    items, info = await db.run(db.read, action)
    return answer(200, **{key: items, "page_info": info})


def path_host(host: str) -> str:
    try:
        return fields.parse_host(host)
    except ValueError as exc:
        raise BadRequest(f"host: {exc}") from None
