"""The fleet: enrolment (administrators) and the agents' status reports (each agent, its host)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy.orm import Session

from vxtap import enrolment
from vxtap.api.openapi import json_body
from vxtap.api.routes.common import (
    ERROR_RESPONSES,
    INTERNAL,
    ApiContext,
    answer,
    context,
    no_content,
    path_host,
    read_body,
)
from vxtap.store import hosts
from vxtap.store.errors import AlreadyExists, InUse, NotFound
from vxtap.wire.requests import EnrolHostRequest, HostStatusRequest

log = logging.getLogger("vxtap.api")

BODY_MODELS = (EnrolHostRequest, HostStatusRequest)
router = APIRouter(prefix=INTERNAL, tags=["fleet"], responses=ERROR_RESPONSES)


def static_hosts(api: ApiContext, project_id: str) -> dict[str, str]:
    """Hosts whose agent key is in the credentials file: host -> access key."""
    return {
        c.host: c.ak
        for c in api.credentials.values()
        if c.host is not None and c.project_id == project_id
    }


def held_requests(api: ApiContext, project_id: str) -> frozenset[str]:
    """Hosts with a held desired-state request open on this server process (other
    processes' are not known here; docs/security.md). On the event loop's thread:
    the registry is the loop's."""
    return api.held.held_hosts(project_id)


@router.post(
    "/hosts",
    status_code=201,
    summary="Enrol a host: issue its agent's credential (shown once)",
    openapi_extra=json_body(EnrolHostRequest),
)
async def enrol_host(project_id: str, request: Request) -> JSONResponse:
    api = context(request)
    host = (await read_body(request, EnrolHostRequest)).host
    if host in static_hosts(api, project_id):
        raise AlreadyExists(f"host {host} has an agent key in the server's credentials file")
    ak = enrolment.new_access_key()

    def action(db: Session) -> dict[str, Any]:
        hosts.enrol_host(db, project_id, host, ak)
        return hosts.host_status(db, project_id, host, static_hosts(api, project_id))

    status = await api.database.run_waiting(action, write=True)
    secret = enrolment.agent_secret(api.agent_signing_key, project_id, host, ak)
    credential = {"ak": ak, "sk": secret, "project_id": project_id, "host": host}
    log.info("enrolled host %s of project %s (access key %s)", host, project_id, ak)
    return answer(201, host=status, credential=credential)


@router.get("/hosts", summary="Every host: enrolment, agent version, desired vs applied revision")
async def list_hosts(project_id: str, request: Request) -> JSONResponse:
    api = context(request)
    held_here = held_requests(api, project_id)
    statuses = await api.database.run_waiting(
        lambda db: hosts.host_statuses(
            db, project_id, static_hosts(api, project_id), held=held_here, built=api.held.built
        ),
        write=False,
    )
    return answer(200, hosts=statuses)


@router.get("/hosts/{host}", summary="One host's status")
async def show_host(project_id: str, host: str, request: Request) -> JSONResponse:
    api = context(request)
    checked = path_host(host)
    held_here = held_requests(api, project_id)
    found = await api.database.run_waiting(
        lambda db: hosts.host_statuses(
            db,
            project_id,
            static_hosts(api, project_id),
            only=checked,
            held=held_here,
            built=api.held.built,
        ),
        write=False,
    )
    if not found:
        raise NotFound(f"host {checked} is not enrolled and has never reported")
    return answer(200, host=found[0])


@router.delete(
    "/hosts/{host}",
    status_code=204,
    summary="Revoke a host's agent key at once (its ports stay)",
)
async def revoke_host(project_id: str, host: str, request: Request) -> Response:
    api = context(request)
    checked = path_host(host)
    if checked in static_hosts(api, project_id):
        raise InUse(
            f"host {checked}'s agent key is in the server's credentials file: remove it "
            "there and restart the servers"
        )
    await api.database.run_waiting(
        lambda db: hosts.revoke_host(db, project_id, checked), write=True
    )
    log.info("revoked host %s of project %s", checked, project_id)
    return no_content()


@router.put(
    "/hosts/{host}/status",
    status_code=204,
    summary="An agent reports what it applied",
    openapi_extra=json_body(HostStatusRequest),
)
async def put_status(project_id: str, host: str, request: Request) -> Response:
    api = context(request)
    checked = path_host(host)
    fields = (await read_body(request, HostStatusRequest)).model_dump()
    await api.database.run_waiting(
        lambda db: hosts.put_status(db, project_id, checked, fields), write=True
    )
    return no_content()
