"""The console's way to the API: `VxtapClient` over a transport that hands each
request to the API's ASGI application in the same process.

So the console goes through exactly what a remote client goes through (signature,
validation, store, the same refusal messages) without a network hop or a second
copy of any rule. Console pages run in Starlette's worker threads; each request is
carried back onto the server's event loop with `anyio.from_thread.run`.
"""

from __future__ import annotations

import anyio.from_thread
import httpx
from starlette.types import ASGIApp

from vxtap import auth
from vxtap.client import VxtapClient

# Only a name for the signature's Host header; nothing is resolved or connected.
LOOPBACK_ENDPOINT = "http://vxtap-console.invalid"


class LoopbackTransport(httpx.BaseTransport):
    def __init__(self, app: ASGIApp) -> None:
        self._asgi = httpx.ASGITransport(app=app)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        async def send() -> tuple[int, list[tuple[bytes, bytes]], bytes]:
            answer = await self._asgi.handle_async_request(request)
            body = await answer.aread()
            return answer.status_code, answer.headers.raw, body

        status, headers, body = anyio.from_thread.run(send)
        return httpx.Response(status, headers=headers, content=body, request=request)


def api_client(app: ASGIApp, credential: auth.Credential) -> VxtapClient:
    return VxtapClient(
        LOOPBACK_ENDPOINT,
        credential.ak,
        credential.sk,
        credential.project_id,
        transport=LoopbackTransport(app),
    )
