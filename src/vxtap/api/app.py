"""The ASGI application: Huawei v3 traffic mirroring, v1 ports (read-only), the internal API.

Layers: `AuthMiddleware` (signature, project scope, body size) in front of every
route except health, the OpenAPI pages and the console; one router per resource
(`vxtap.api.routes`) whose routes only convert between the wire (`vxtap.wire`) and
the store (`vxtap.store.filters`, `rules`, `ports`, `sessions`, `agent_view`), in one
database transaction per request (`vxtap.api.db`); every refusal answered in Huawei's
error shape (`vxtap.api.errors`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import datetime

from fastapi import FastAPI

from vxtap import auth, enrolment, model
from vxtap.api import openapi
from vxtap.api.db import Database
from vxtap.api.errors import install_error_handlers, refusal_response
from vxtap.api.held import HeldRenewals, HeldRequests
from vxtap.api.member_health import MemberHealthChecker
from vxtap.api.middleware import AuthMiddleware
from vxtap.api.routes import filters, fleet, internal, ports, rules, sessions, target_groups
from vxtap.api.routes.common import ApiContext
from vxtap.console import mount_console
from vxtap.store import hosts
from vxtap.store.db import Store


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
    database = Database(store)
    # Target-group members whose collector fell silent are marked down (docs/elb.md).
    member_health = MemberHealthChecker(database)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await held.start()
        await member_health.start()
        yield
        await member_health.stop()
        await held.stop()

    app = FastAPI(
        title="vxtap",
        version="0.1.0",
        description="Self-hosted VPC traffic mirroring with Huawei Cloud's traffic-mirroring API.",
        lifespan=lifespan,
    )
    app.state.held = held
    app.state.member_health = member_health
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
        if store.dialect != "sqlite":
            return await database.call(enrolled_agent, ak)
        # Remembered until its host's revision moves (revoking moves it): vxtap.api.held
        found = held.cached_agent(ak)
        if found is None:
            found = await database.call(enrolled_agent, ak)
            if found is not None:
                held.remember_agent(found)
        return found

    async def revoked(credential: auth.Credential) -> bool:
        """An enrolled agent's key removed since its request was let in."""
        if credential.host is None or credential.ak in credentials:
            return False  # administrators' and the credentials file's keys stay
        return await agent_lookup(credential.ak) is None

    app.state.api = ApiContext(
        database=database,
        held=held,
        revoked=revoked,
        credentials=credentials,
        agent_signing_key=agent_signing_key,
        max_rules_per_direction=max_rules_per_direction,
    )
    # Added before AuthMiddleware, so it runs after it (the last added runs first): a
    # renewal it answers was signed and allowed like any request.
    app.add_middleware(
        HeldRenewals,
        held=held,
        revoked=revoked,
        refuse=refusal_response,
    )
    app.add_middleware(
        AuthMiddleware, credentials=credentials, clock=clock, agent_lookup=agent_lookup
    )
    install_error_handlers(app)
    for router in (
        filters.router,
        rules.router,
        sessions.router,
        ports.router,
        internal.router,
        internal.health,
        fleet.router,
        target_groups.router,
    ):
        app.include_router(router)
    openapi.document(
        app,
        [
            *filters.BODY_MODELS,
            *rules.BODY_MODELS,
            *sessions.BODY_MODELS,
            *internal.BODY_MODELS,
            *fleet.BODY_MODELS,
            *target_groups.BODY_MODELS,
        ],
    )
    mount_console(app, credentials, clock=clock)
    return app
