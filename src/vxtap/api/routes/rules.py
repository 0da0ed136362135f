"""Huawei v3 traffic-mirror filter rules."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from vxtap.api import render
from vxtap.api.errors import BadRequest
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
from vxtap.store import rules as rule_store
from vxtap.store.rules import RuleChange, RuleSpec
from vxtap.wire import answers, query
from vxtap.wire.requests import (
    CreateRuleOption,
    CreateRuleRequest,
    UpdateRuleOption,
    UpdateRuleRequest,
)

BODY_MODELS = (CreateRuleRequest, UpdateRuleRequest)
router = APIRouter(prefix=V3, tags=["rules"], responses=ERROR_RESPONSES)

# A rule's body field → the store's name for it (`RuleSpec`, `RuleChange`).
DOMAIN_NAMES = {
    "traffic_mirror_filter_id": "filter_id",
    "direction": "direction",
    "priority": "priority",
    "action": "action",
    "ethertype": "ethertype",
    "protocol": "protocol",
    "source_cidr_block": "source_cidr",
    "destination_cidr_block": "destination_cidr",
    "source_port_range": "source_ports",
    "destination_port_range": "destination_ports",
    "description": "description",
}


def rule_spec(option: CreateRuleOption) -> RuleSpec:
    return RuleSpec(**{DOMAIN_NAMES[key]: value for key, value in option.model_dump().items()})


def rule_change(option: UpdateRuleOption) -> RuleChange:
    """Only the fields the body names: an absent field is kept, a null one cleared."""
    given = option.model_dump(exclude_unset=True)
    for key in ("priority", "action", "ethertype", "protocol"):
        if key in given and given[key] is None:
            raise BadRequest(f"traffic_mirror_filter_rule.{key}: must not be null")
    return RuleChange(**{DOMAIN_NAMES[key]: value for key, value in given.items()})


@router.post(
    "/traffic-mirror-filter-rules",
    status_code=201,
    summary="CreateTrafficMirrorFilterRule",
    responses={201: {"model": answers.RuleAnswer}},
    openapi_extra=json_body(CreateRuleRequest),
)
async def create_rule(project_id: str, request: Request) -> JSONResponse:
    spec = rule_spec((await read_body(request, CreateRuleRequest)).traffic_mirror_filter_rule)
    api = context(request)
    db = api.database
    result = await db.run(
        db.write,
        lambda s: render.rule_json(
            rule_store.create_rule(s, project_id, spec, quota=api.max_rules_per_direction)
        ),
    )
    return answer(201, traffic_mirror_filter_rule=result)


@router.get(
    "/traffic-mirror-filter-rules",
    summary="ListTrafficMirrorFilterRules",
    openapi_extra=query_parameters(query.RULE_QUERY),
    responses={200: {"model": answers.RuleListAnswer}},
)
async def list_rules(project_id: str, request: Request) -> JSONResponse:
    return await list_answer(
        request,
        project_id,
        query.RULE_QUERY,
        rule_store.list_rules,
        render.rule_json,
        key="traffic_mirror_filter_rules",
    )


@router.get(
    "/traffic-mirror-filter-rules/{rule_id}",
    summary="ShowTrafficMirrorFilterRule",
    responses={200: {"model": answers.RuleAnswer}},
)
async def show_rule(project_id: str, rule_id: str, request: Request) -> JSONResponse:
    db = context(request).database
    result = await db.run(
        db.read, lambda s: render.rule_json(rule_store.get_rule(s, project_id, rule_id))
    )
    return answer(200, traffic_mirror_filter_rule=result)


@router.put(
    "/traffic-mirror-filter-rules/{rule_id}",
    summary="UpdateTrafficMirrorFilterRule",
    responses={200: {"model": answers.RuleAnswer}},
    openapi_extra=json_body(UpdateRuleRequest),
)
async def update_rule(project_id: str, rule_id: str, request: Request) -> JSONResponse:
    change = rule_change((await read_body(request, UpdateRuleRequest)).traffic_mirror_filter_rule)
    db = context(request).database
    result = await db.run(
        db.write, lambda s: render.rule_json(rule_store.update_rule(s, project_id, rule_id, change))
    )
    return answer(200, traffic_mirror_filter_rule=result)


@router.delete(
    "/traffic-mirror-filter-rules/{rule_id}",
    status_code=204,
    summary="DeleteTrafficMirrorFilterRule",
)
async def delete_rule(project_id: str, rule_id: str, request: Request) -> Response:
    db = context(request).database
    await db.run(db.write, lambda s: rule_store.delete_rule(s, project_id, rule_id))
    return no_content()
