"""Serving the application with uvicorn so that it keeps answering while clients misbehave.

- Open files: the soft RLIMIT_NOFILE is raised to the hard limit at start (a service's
  usual soft limit of 1,024 is reached by ~1,000 held agents, and then every new
  connection is reset).
- Slow or idle connections: a connection must deliver a whole request (head and body)
  within `REQUEST_TIMEOUT_S` of its first byte, or of connecting; between requests it
  may stay idle `KEEP_ALIVE_S`. Otherwise it is closed. A held request is exempt: it
  was delivered whole, and the server is the one taking its time.
- Shutdown: held requests are answered (304) at once, so agents move to another
  server instead of waiting out their hold.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from vxtap.api.held import HeldRequests

log = logging.getLogger("vxtap.api")

REQUEST_TIMEOUT_S = 10.0
KEEP_ALIVE_S = 5.0
SHUTDOWN_GRACE_S = 5.0
# The kernel caps the listen backlog at net.core.somaxconn; a reconnect storm of a large
# fleet needs the deepest queue it allows.
BACKLOG = 8192
# When the hard limit is "unlimited", raise to this (Linux's default fs.nr_open).
MOST_OPEN_FILES = 1 << 20


def raise_open_files_limit() -> tuple[int, int]:
    """Soft RLIMIT_NOFILE up to the hard limit; (before, after)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = MOST_OPEN_FILES if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as error:
            log.warning("could not raise the open-files limit from %d: %s", soft, error)
            return soft, soft
        return soft, target
    return soft, soft


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, plus a deadline for each request to arrive whole."""

    request_timeout = REQUEST_TIMEOUT_S
    arrival: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._expect_request()

    def data_received(self, data: bytes) -> None:
        if self.arrival is None and (self.cycle is None or self.cycle.response_complete):
            self._expect_request()  # the first byte of the next request
        super().data_received(data)

    def on_message_complete(self) -> None:
        self._cancel_arrival()
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_arrival()
        super().connection_lost(exc)

    def _expect_request(self) -> None:
        self._cancel_arrival()
        self.arrival = self.loop.call_later(self.request_timeout, self._too_slow)

    def _cancel_arrival(self) -> None:
        if self.arrival is not None:
            self.arrival.cancel()
            self.arrival = None

    def _too_slow(self) -> None:
        self.arrival = None
        if not self.transport.is_closing():
            self.transport.close()


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, held: HeldRequests) -> None:
        super().__init__(config)
        self.held = held

    def handle_exit(self, sig: int, frame: Any) -> None:
        super().handle_exit(sig, frame)
        self.held.release_all()


def serve(app: Any, held: HeldRequests, *, host: str, port: int, **options: Any) -> None:
    """Run `app` until SIGTERM/SIGINT; `options` go to `uvicorn.Config` as they are."""
    before, after = raise_open_files_limit()
    if after != before:
        log.info("raised the open-files limit from %d to %d", before, after)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=GuardedHttpToolsProtocol,
        timeout_keep_alive=int(KEEP_ALIVE_S),
        timeout_graceful_shutdown=int(SHUTDOWN_GRACE_S),
        backlog=BACKLOG,
        server_header=False,
        # vxtap terminates TLS itself and uses no client address: X-Forwarded-* headers
        # would only let a client choose the address in access logs, at a cost on
        # every request (docs/control-plane.md).
        proxy_headers=False,
        **options,
    )
    _Server(config, held).run()
