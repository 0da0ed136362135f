"""Huawei v3 traffic-mirror filters."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from vxtap.api import render
from vxtap.api.openapi import json_body, query_parameters
from vxtap.api.routes.common import (
    ERROR_RESPONSES,
    V3,
    answer,
    context,
    list_answer,
    no_content,
    read_body,
)
from vxtap.store import filters as filter_store
from vxtap.store.filters import FilterChange, FilterSpec
from vxtap.wire import answers, query
from vxtap.wire.requests import CreateFilterRequest, UpdateFilterRequest

BODY_MODELS = (CreateFilterRequest, UpdateFilterRequest)
router = APIRouter(prefix=V3, tags=["filters"], responses=ERROR_RESPONSES)


@router.post(
    "/traffic-mirror-filters",
    status_code=201,
    responses={201: {"model": answers.FilterAnswer}},
    summary="CreateTrafficMirrorFilter",
    openapi_extra=json_body(CreateFilterRequest),
)
async def create_filter(project_id: str, request: Request) -> JSONResponse:
    option = (await read_body(request, CreateFilterRequest)).traffic_mirror_filter
    spec = FilterSpec(name=option.name, description=option.description)
    db = context(request).database
    result = await db.run(
        db.write, lambda s: render.filter_json(filter_store.create_filter(s, project_id, spec))
    )
    return answer(201, traffic_mirror_filter=result)


@router.get(
    "/traffic-mirror-filters",
    summary="ListTrafficMirrorFilters",
    openapi_extra=query_parameters(query.FILTER_QUERY),
    responses={200: {"model": answers.FilterListAnswer}},
)
async def list_filters(project_id: str, request: Request) -> JSONResponse:
    return await list_answer(
        request,
        project_id,
        query.FILTER_QUERY,
        filter_store.list_filters,
        render.filter_json,
        key="traffic_mirror_filters",
    )


@router.get(
    "/traffic-mirror-filters/{filter_id}",
    summary="ShowTrafficMirrorFilter",
    responses={200: {"model": answers.FilterAnswer}},
)
async def show_filter(project_id: str, filter_id: str, request: Request) -> JSONResponse:
    db = context(request).database
    result = await db.run(
        db.read, lambda s: render.filter_json(filter_store.get_filter(s, project_id, filter_id))
    )
    return answer(200, traffic_mirror_filter=result)


@router.put(
    "/traffic-mirror-filters/{filter_id}",
    summary="UpdateTrafficMirrorFilter",
    responses={200: {"model": answers.FilterAnswer}},
    openapi_extra=json_body(UpdateFilterRequest),
)
async def update_filter(project_id: str, filter_id: str, request: Request) -> JSONResponse:
    option = (await read_body(request, UpdateFilterRequest)).traffic_mirror_filter
    change = FilterChange(name=option.name, description=option.description)
    db = context(request).database
    result = await db.run(
        db.write,
        lambda s: render.filter_json(filter_store.update_filter(s, project_id, filter_id, change)),
    )
    return answer(200, traffic_mirror_filter=result)


@router.delete(
    "/traffic-mirror-filters/{filter_id}",
    status_code=204,
    summary="DeleteTrafficMirrorFilter",
)
async def delete_filter(project_id: str, filter_id: str, request: Request) -> Response:
    db = context(request).database
    await db.run(db.write, lambda s: filter_store.delete_filter(s, project_id, filter_id))
    return no_content()
