"""Target groups (internal API, administrators only): the collector ports an `elb`
session mirrors to (docs/elb.md)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from vxtap.api import render
from vxtap.api.openapi import json_body, query_parameters
from vxtap.api.routes.common import (
    ERROR_RESPONSES,
    INTERNAL,
    answer,
    context,
    list_answer,
    no_content,
    read_body,
)
from vxtap.store import target_groups as group_store
from vxtap.store.target_groups import TargetGroupChange, TargetGroupSpec
from vxtap.wire import answers, query
from vxtap.wire.requests import (
    CreateTargetGroupRequest,
    MembersRequest,
    UpdateTargetGroupRequest,
)

BODY_MODELS = (CreateTargetGroupRequest, UpdateTargetGroupRequest, MembersRequest)
router = APIRouter(prefix=INTERNAL, tags=["target groups"], responses=ERROR_RESPONSES)


@router.post(
    "/target-groups",
    status_code=201,
    responses={201: {"model": answers.TargetGroupAnswer}},
    summary="Create a target group (optionally with members)",
    openapi_extra=json_body(CreateTargetGroupRequest),
)
async def create_target_group(project_id: str, request: Request) -> JSONResponse:
    option = (await read_body(request, CreateTargetGroupRequest)).target_group
    spec = TargetGroupSpec(option.name, option.description, tuple(option.ports))
    db = context(request).database
    result = await db.run(
        db.write,
        lambda s: render.target_group_json(group_store.create_target_group(s, project_id, spec)),
    )
    return answer(201, target_group=result)


@router.get(
    "/target-groups",
    summary="List target groups",
    openapi_extra=query_parameters(query.TARGET_GROUP_QUERY),
    responses={200: {"model": answers.TargetGroupListAnswer}},
)
async def list_target_groups(project_id: str, request: Request) -> JSONResponse:
    return await list_answer(
        request,
        project_id,
        query.TARGET_GROUP_QUERY,
        group_store.list_target_groups,
        render.target_group_json,
        key="target_groups",
    )


@router.get(
    "/target-groups/{group_id}",
    summary="Show a target group and its members",
    responses={200: {"model": answers.TargetGroupAnswer}},
)
async def show_target_group(project_id: str, group_id: str, request: Request) -> JSONResponse:
    db = context(request).database
    result = await db.run(
        db.read,
        lambda s: render.target_group_json(group_store.get_target_group(s, project_id, group_id)),
    )
    return answer(200, target_group=result)


@router.put(
    "/target-groups/{group_id}",
    summary="Change a target group's name or description",
    responses={200: {"model": answers.TargetGroupAnswer}},
    openapi_extra=json_body(UpdateTargetGroupRequest),
)
async def update_target_group(project_id: str, group_id: str, request: Request) -> JSONResponse:
    option = (await read_body(request, UpdateTargetGroupRequest)).target_group
    change = TargetGroupChange(name=option.name, description=option.description)
    db = context(request).database
    result = await db.run(
        db.write,
        lambda s: render.target_group_json(
            group_store.update_target_group(s, project_id, group_id, change)
        ),
    )
    return answer(200, target_group=result)


@router.put(
    "/target-groups/{group_id}/add-members",
    summary="Add ports to a target group (each gets the lowest free number)",
    responses={200: {"model": answers.TargetGroupAnswer}},
    openapi_extra=json_body(MembersRequest),
)
async def add_members(project_id: str, group_id: str, request: Request) -> JSONResponse:
    ports = (await read_body(request, MembersRequest)).target_group.ports
    db = context(request).database
    result = await db.run(
        db.write,
        lambda s: render.target_group_json(group_store.add_members(s, project_id, group_id, ports)),
    )
    return answer(200, target_group=result)


@router.put(
    "/target-groups/{group_id}/remove-members",
    summary="Remove ports from a target group",
    responses={200: {"model": answers.TargetGroupAnswer}},
    openapi_extra=json_body(MembersRequest),
)
async def remove_members(project_id: str, group_id: str, request: Request) -> JSONResponse:
    ports = (await read_body(request, MembersRequest)).target_group.ports
    db = context(request).database
    result = await db.run(
        db.write,
        lambda s: render.target_group_json(
            group_store.remove_members(s, project_id, group_id, ports)
        ),
    )
    return answer(200, target_group=result)


@router.delete(
    "/target-groups/{group_id}",
    status_code=204,
    summary="Delete a target group (refused while a session mirrors to it)",
)
async def delete_target_group(project_id: str, group_id: str, request: Request) -> Response:
    db = context(request).database
    await db.run(db.write, lambda s: group_store.delete_target_group(s, project_id, group_id))
    return no_content()
