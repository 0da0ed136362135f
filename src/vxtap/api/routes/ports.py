"""Ports in Huawei's v1 shape, read-only (agents register them: `routes.internal`)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from vxtap.api import render
from vxtap.api.openapi import query_parameters
from vxtap.api.routes.common import ERROR_RESPONSES, answer, context, list_answer
from vxtap.store import ports as port_store
from vxtap.wire import query

router = APIRouter(prefix="/v1/{project_id}", tags=["ports"], responses=ERROR_RESPONSES)


@router.get("/ports", summary="ListPorts", openapi_extra=query_parameters(query.PORT_QUERY))
async def list_v1_ports(project_id: str, request: Request) -> JSONResponse:
    return await list_answer(
        request,
        project_id,
        query.PORT_QUERY,
        port_store.list_ports,
        render.v1_port_json,
        key="ports",
    )


@router.get("/ports/{port_id}", summary="ShowPort")
async def show_v1_port(project_id: str, port_id: str, request: Request) -> JSONResponse:
    db = context(request).database
    result = await db.run(
        db.read, lambda s: render.v1_port_json(port_store.get_port(s, project_id, port_id))
    )
    return answer(200, port=result)
