"""The OpenAPI document's hand-built parts: list queries, request bodies, 400 for 422.

Bodies and queries are parsed by the routes themselves (`routes.common.read_body`,
`wire.query`), not declared as FastAPI parameters, so they are documented here.
Why not FastAPI's own parameters: a pydantic query-parameter model documents every
key as `anyOf: [array, null]` with a title instead of the plain types below (tried on
the filter list), which changes the document tests/api/test_openapi_snapshot.py pins.
A declared body parameter gave the same `requestBody` entry on the one route it was
tried on; moving every body is open, and must keep that document and the refusal
messages tests/api/test_wire_and_auth.py checks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from vxtap import model
from vxtap.wire import query


def query_parameters(keys: Mapping[str, query.QueryField]) -> dict[str, Any]:
    """`openapi_extra` of a list: its query parameters (parsed by `wire.query`)."""
    parameters = []
    for name in {**keys, **query.PAGING_QUERY}:
        schema: dict[str, Any] = {"type": "string"}
        if name == "limit":
            schema = {"type": "integer", "minimum": 0, "maximum": model.MAX_PAGE_SIZE}
        elif name in ("priority", "virtual_network_id", "packet_length"):
            schema = {"type": "integer"}
        elif name == "enabled":
            schema = {"type": "boolean"}
        parameters.append({"name": name, "in": "query", "required": False, "schema": schema})
    return {"parameters": parameters}


def json_body(model_type: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` of a route that parses its body itself; `document` adds the model."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"$ref": f"#/components/schemas/{model_type.__name__}"}
                }
            },
        }
    }


def document(app: FastAPI, body_models: Iterable[type[BaseModel]]) -> None:
    """Add the request-body models to the components the routes refer to, and answer
    400 where FastAPI documents its 422 (this API answers 400)."""
    original = app.openapi
    models = set(body_models)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = original()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model_type in models:
            generated = model_type.model_json_schema(ref_template="#/components/schemas/{model}")
            for name, definition in generated.pop("$defs", {}).items():
                components.setdefault(name, definition)
            components[model_type.__name__] = generated
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                if operation.get("responses", {}).pop("422", None) is not None:
                    operation["responses"].setdefault(
                        "400",
                        {
                            "description": "Bad input",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/ErrorAnswer"}
                                }
                            },
                        },
                    )
        for name in ("HTTPValidationError", "ValidationError"):
            components.pop(name, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
