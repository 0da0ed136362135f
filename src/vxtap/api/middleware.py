"""Authentication in front of every route: signature, project scope, body size.

Everything except health, the OpenAPI pages and the web console (which signs its
visitors in itself) must carry a valid SDK-HMAC-SHA256 signature of a key allowed
to act on the path's project; `vxtap.api.access` says what each kind of key may do.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime

from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vxtap import auth
from vxtap.api import access
from vxtap.api.errors import (
    REQUEST_ID,
    BadRequest,
    Forbidden,
    Unauthorized,
    Unavailable,
    refusal_response,
)

log = logging.getLogger("vxtap.api")

MAX_BODY_BYTES = 1 << 20
UNSIGNED_PATHS = frozenset(
    {"/healthz", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
)
# The web console signs its visitors in itself (cookie sessions) and reaches the API
# through this middleware like any client: see vxtap.console.
CONSOLE_PREFIX = "/console"
# Path prefixes whose next segment is the project id the request acts on.
PROJECT_PREFIXES = (("v3",), ("v1",), ("internal", "v1"))

AgentLookup = Callable[[str], Awaitable[auth.Credential | None]]


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
