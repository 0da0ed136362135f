"""The web console served by `vxtap server` at /console (docs/console.md)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from vxtap import auth

PREFIX = "/console"


def mount_console(
    app: FastAPI,
    credentials: Mapping[str, auth.Credential],
    *,
    clock: Callable[[], datetime] | None = None,
) -> None:
    """Serve the console at /console of `app`, sending its requests to `app` itself.

    The console (templates, form parsing) is built on its first request, so a server
    that only answers the API never loads it and its memory stays as it was.
    """
    built: list[ASGIApp] = []

    async def console(scope: Scope, receive: Receive, send: Send) -> None:
        if not built:  # no await between the check and the append: built once
            from vxtap.console.app import create_console

            built.append(create_console(app, credentials, clock=clock))
        await built[0](scope, receive, send)

    app.mount(PREFIX, console, name="console")
