"""Every refusal the API answers, in Huawei's error shape, with its status and code.

`ANSWERS` is the one table from refusal type to (HTTP status, Huawei-style code):
the store's domain errors (`vxtap.store.errors`) and the refusals only the API words
(authentication, authorization, malformed requests, load shedding). Codes follow Huawei's
VPC catalogue where it has one (VPC.0002 bad request, VPC.0003 not found, VPC.0008
bad credentials); conflicts have vxtap's own codes, documented in
docs/control-plane.md. Every refusal, FastAPI's own validation included, answers
`{"request_id", "error_msg", "error_code"}`.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from vxtap.store import errors as store
from vxtap.wire.answers import ErrorAnswer
from vxtap.wire.requests import FIXED_FIELDS

log = logging.getLogger("vxtap.api")

# The id of the request being answered (set by `AuthMiddleware`), in every answer's body.
REQUEST_ID: ContextVar[str] = ContextVar("request_id", default="")


class Refusal(Exception):
    """A refusal that only the API words; `message` says what to change."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(Refusal):
    """The request itself is malformed: body, path or query."""


class Unauthorized(Refusal):
    """No valid signature, or a key that was revoked."""


class Forbidden(Refusal):
    """A valid key that may not do this (another project, an agent outside its host)."""


class Unavailable(Refusal):
    """The server cannot take the request now (too many at once, its key store away);
    the client retries later."""


BAD_REQUEST = (400, "VPC.0002")
ANSWERS: dict[type[Exception], tuple[int, str]] = {
    BadRequest: BAD_REQUEST,
    Unauthorized: (401, "VPC.0008"),
    Forbidden: (403, "VPC.0007"),
    Unavailable: (503, "VPC.0503"),
    store.Invalid: BAD_REQUEST,
    store.NotFound: (404, "VPC.0003"),
    store.Busy: (503, "VPC.0503"),
    store.Conflict: (409, "VPC.2900"),
    store.InUse: (409, "VPC.2901"),  # a filter or port a session still names
    store.DuplicatePriority: (409, "VPC.2902"),  # per filter+direction, or per source
    store.QuotaExceeded: (409, "VPC.2903"),  # 10 sources per session, 3 sessions per source
    store.AlreadyExists: (409, "VPC.2904"),  # a port with this host and device, a host
    store.ConcurrentChange: (409, "VPC.2905"),  # a concurrent change got there first; retry
}


def status_and_code(refusal: Refusal | store.StoreError) -> tuple[int, str]:
    """The most specific entry of `ANSWERS` for the refusal's type."""
    for kind in type(refusal).__mro__:
        found = ANSWERS.get(kind)
        if found is not None:
            return found
    raise LookupError(f"no answer is declared for {type(refusal).__name__}")


def error_body(message: str, code: str) -> ErrorAnswer:
    return {"request_id": REQUEST_ID.get(), "error_msg": message, "error_code": code}


def error_response(status: int, message: str, code: str) -> JSONResponse:
    return JSONResponse(error_body(message, code), status_code=status)


def refusal_response(refusal: Refusal | store.StoreError) -> JSONResponse:
    status, code = status_and_code(refusal)
    return error_response(status, refusal.message, code)


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
            hint = FIXED_FIELDS.get(tuple(location[-2:]))
            parts.append(f"{field}: {hint or 'is not a field of this request'}")
            continue
        if kind in ("model_type", "model_attributes_type", "dict_type"):
            parts.append(f"{field or 'request body'}: must be a JSON object")
            continue
        parts.append(f"{field}: {message}" if field else message)
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def on_validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(BAD_REQUEST[0], validation_message(exc), BAD_REQUEST[1])

    @app.exception_handler(Refusal)
    async def on_refusal(_request: Request, exc: Refusal) -> JSONResponse:
        return refusal_response(exc)

    @app.exception_handler(store.StoreError)
    async def on_store_refusal(_request: Request, exc: store.StoreError) -> JSONResponse:
        return refusal_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            status, code = ANSWERS[store.NotFound]
            return error_response(status, f"no such API: {request.url.path}", code)
        if exc.status_code == 405:
            return error_response(
                405, f"method {request.method} is not allowed on {request.url.path}", "VPC.0405"
            )
        return error_response(exc.status_code, str(exc.detail), f"VPC.0{exc.status_code}")

    @app.exception_handler(Exception)
    async def on_crash(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error", exc_info=exc)
        return error_response(500, "internal server error; see the server log", "VPC.0500")
