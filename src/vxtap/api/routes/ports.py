"""Ports in Huawei's v1 shape, read-only (agents register them: `routes.internal`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from vxtap.api import render
from vxtap.api.openapi import query_parameters
from vxtap.api.routes.common import ERROR_RESPONSES, answer, context, parse_query
from vxtap.store import ports as port_store
from vxtap.wire import query

router = APIRouter(prefix="/v1/{project_id}", tags=["ports"], responses=ERROR_RESPONSES)


@router.get("/ports", summary="ListPorts", openapi_extra=query_parameters(query.PORT_QUERY))
async def list_v1_ports(project_id: str, request: Request) -> JSONResponse:
    where, limit, marker = parse_query(request, query.PORT_QUERY)

    def action(s: Session) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        page = port_store.list_ports(s, project_id, where, limit, marker)
        return [render.v1_port_json(r) for r in page.rows], page.page_info()

    db = context(request).database
    items, info = await db.run(db.read, action)
    return answer(200, ports=items, page_info=info)


@router.get("/ports/{port_id}", summary="ShowPort")
async def show_v1_port(project_id: str, port_id: str, request: Request) -> JSONResponse:
    db = context(request).database
    result = await db.run(
        db.read, lambda s: render.v1_port_json(port_store.get_port(s, project_id, port_id))
    )
    return answer(200, port=result)
