"""Huawei v3 traffic-mirror sessions, and their sources."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from vxtap import model
from vxtap.api import render
from vxtap.api.openapi import json_body, query_parameters
from vxtap.api.routes.common import (
    ERROR_RESPONSES,
    V3,
    answer,
    context,
    no_content,
    parse_query,
    read_body,
)
from vxtap.store import sessions as session_store
from vxtap.store.schema import SessionRow
from vxtap.store.sessions import SessionChange, SessionSpec
from vxtap.wire import answers, query
from vxtap.wire.requests import (
    CreateSessionOption,
    CreateSessionRequest,
    SourcesRequest,
    UpdateSessionOption,
    UpdateSessionRequest,
)

BODY_MODELS = (CreateSessionRequest, UpdateSessionRequest, SourcesRequest)
router = APIRouter(prefix=V3, tags=["sessions"], responses=ERROR_RESPONSES)


def _spec(option: CreateSessionOption) -> SessionSpec:
    """The validated Huawei body in the domain's names: the one place they are mapped."""
    return SessionSpec(
        name=option.name,
        description=option.description,
        filter_id=option.traffic_mirror_filter_id,
        sources=tuple(option.traffic_mirror_sources),
        target_id=option.traffic_mirror_target_id,
        target_kind=model.TargetKind(option.traffic_mirror_target_type.value),
        vni=option.virtual_network_id,
        packet_length=option.packet_length,
        priority=option.priority,
        enabled=option.enabled,
        source_kind=option.type.value,
    )


def _change(option: UpdateSessionOption) -> SessionChange:
    """An update body in the domain's names; a field sent as null is left as it is."""
    target_type, source_type = option.traffic_mirror_target_type, option.type
    return SessionChange(
        name=option.name,
        description=option.description,
        filter_id=option.traffic_mirror_filter_id,
        target_id=option.traffic_mirror_target_id,
        target_kind=None if target_type is None else model.TargetKind(target_type.value),
        vni=option.virtual_network_id,
        packet_length=option.packet_length,
        priority=option.priority,
        enabled=option.enabled,
        source_kind=None if source_type is None else source_type.value,
    )


def _session_answer(db: Session, project_id: str, row: SessionRow) -> dict[str, Any]:
    """A session as answered after a write: read back like every session answer."""
    return render.session_json(*session_store.show_session(db.connection(), project_id, row.id))


@router.post(
    "/traffic-mirror-sessions",
    status_code=201,
    summary="CreateTrafficMirrorSession",
    responses={201: {"model": answers.SessionAnswer}},
    openapi_extra=json_body(CreateSessionRequest),
)
async def create_session(project_id: str, request: Request) -> JSONResponse:
    spec = _spec((await read_body(request, CreateSessionRequest)).traffic_mirror_session)
    db = context(request).database
    result = await db.run(
        db.write,
        lambda s: _session_answer(s, project_id, session_store.create_session(s, project_id, spec)),
    )
    return answer(201, traffic_mirror_session=result)


@router.get(
    "/traffic-mirror-sessions",
    summary="ListTrafficMirrorSessions",
    openapi_extra=query_parameters(query.SESSION_QUERY),
    responses={200: {"model": answers.SessionListAnswer}},
)
async def list_sessions(project_id: str, request: Request) -> JSONResponse:
    where, limit, marker = parse_query(request, query.SESSION_QUERY)

    def action(connection: Connection) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        page, sources = session_store.list_sessions(connection, project_id, where, limit, marker)
        return [render.session_json(r, sources[r.id]) for r in page.rows], page.page_info()

    db = context(request).database
    items, info = await db.run(db.read_rows, action)
    return answer(200, traffic_mirror_sessions=items, page_info=info)


@router.get(
    "/traffic-mirror-sessions/{session_id}",
    summary="ShowTrafficMirrorSession",
    responses={200: {"model": answers.SessionAnswer}},
)
async def show_session(project_id: str, session_id: str, request: Request) -> JSONResponse:
    db = context(request).database
    result = await db.run(
        db.read_rows,
        lambda connection: render.session_json(
            *session_store.show_session(connection, project_id, session_id)
        ),
    )
    return answer(200, traffic_mirror_session=result)


@router.put(
    "/traffic-mirror-sessions/{session_id}",
    summary="UpdateTrafficMirrorSession",
    responses={200: {"model": answers.SessionAnswer}},
    openapi_extra=json_body(UpdateSessionRequest),
)
async def update_session(project_id: str, session_id: str, request: Request) -> JSONResponse:
    change = _change((await read_body(request, UpdateSessionRequest)).traffic_mirror_session)
    db = context(request).database
    result = await db.run(
        db.write,
        lambda s: _session_answer(
            s, project_id, session_store.update_session(s, project_id, session_id, change)
        ),
    )
    return answer(200, traffic_mirror_session=result)


@router.put(
    "/traffic-mirror-sessions/{session_id}/add-sources",
    summary="AddSourcesToTrafficMirrorSession",
    responses={200: {"model": answers.SessionAnswer}},
    openapi_extra=json_body(SourcesRequest),
)
async def add_sources(project_id: str, session_id: str, request: Request) -> JSONResponse:
    option = (await read_body(request, SourcesRequest)).traffic_mirror_session
    sources = option.traffic_mirror_sources
    db = context(request).database
    result = await db.run(
        db.write,
        lambda s: _session_answer(
            s, project_id, session_store.add_sources(s, project_id, session_id, sources)
        ),
    )
    return answer(200, traffic_mirror_session=result)


@router.put(
    "/traffic-mirror-sessions/{session_id}/remove-sources",
    summary="RemoveSourcesFromTrafficMirrorSession",
    responses={200: {"model": answers.SessionAnswer}},
    openapi_extra=json_body(SourcesRequest),
)
async def remove_sources(project_id: str, session_id: str, request: Request) -> JSONResponse:
    option = (await read_body(request, SourcesRequest)).traffic_mirror_session
    sources = option.traffic_mirror_sources
    db = context(request).database
    result = await db.run(
        db.write,
        lambda s: _session_answer(
            s, project_id, session_store.remove_sources(s, project_id, session_id, sources)
        ),
    )
    return answer(200, traffic_mirror_session=result)


@router.delete(
    "/traffic-mirror-sessions/{session_id}",
    status_code=204,
    summary="DeleteTrafficMirrorSession",
)
async def delete_session(project_id: str, session_id: str, request: Request) -> Response:
    db = context(request).database
    await db.run(db.write, lambda s: session_store.delete_session(s, project_id, session_id))
    return no_content()
