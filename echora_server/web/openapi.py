"""The OpenAPI 3.1 document, built from the routes and the models that validate requests."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from importlib.metadata import version
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode

from echora_server.core.route import Route
from echora_server.core.shapes import Shape

# A path parameter, with aiohttp's optional ``:regex``.
_PARAM = re.compile(r"\{(\w+)(?::[^{}]*)?\}")

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "description": "Stable machine-readable code."},
                "message": {"type": "string"},
                "details": {},
            },
            "additionalProperties": False,
        }
    },
    "additionalProperties": False,
}


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _component(
    model: type[BaseModel], schemas: dict[str, Any], mode: JsonSchemaMode = "validation"
) -> dict[str, Any]:
    """A ``$ref`` to the model, added with the models it uses to ``schemas``."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}", mode=mode)
    found = {**schema.pop("$defs", {}), model.__name__: schema}
    if mode == "serialization":
        for item in found.values():
            for prop in item.get("properties", {}).values():
                # A key a response may leave out is absent, not null: no default to state.
                if prop.get("default", 0) is None:
                    del prop["default"]
    for name, item in found.items():
        # Two models of one name would silently document only one of them.
        assert schemas.setdefault(name, item) == item, f"two schemas named {name}"
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema()
    required = set(schema.get("required", ()))
    params = []
    for name, prop in schema["properties"].items():
        param: dict[str, Any] = {"name": name, "in": "query", "required": name in required}
        if "description" in prop:
            param["description"] = prop.pop("description")
        prop.pop("title", None)
        # An optional parameter is simply left out of a query string; it is never null.
        variants = [v for v in prop.get("anyOf", []) if v != {"type": "null"}]
        if len(variants) == 1:
            del prop["anyOf"]
            prop.update(variants[0])
        if prop.get("default", 0) is None:
            del prop["default"]
        param["schema"] = prop
        params.append(param)
    return params


def _operation(route: Route, schemas: dict[str, Any]) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": route.summary,
        "tags": [route.tag],
        "operationId": route.handler.__name__,
        "responses": {},
    }
    params = [
        {
            "name": p,
            "in": "path",
            "required": True,
            "schema": copy.deepcopy(route.path_params.get(p, {"type": "integer"})),
        }
        for p in _PARAM.findall(route.path)
    ]
    if route.query is not None:
        params.extend(_query_parameters(route.query))
    if params:
        op["parameters"] = params
    if route.body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _component(route.body, schemas)}},
        }
    if route.request_content is not None:
        # Beside a JSON body (a route taking either), else on its own.
        json_body = op.get("requestBody", {}).get("content", {})
        op["requestBody"] = {
            "required": route.request_content.required,
            "description": route.request_content.description,
            "content": {**json_body, **copy.deepcopy(route.request_content.content)},
        }
    for status, description in route.responses.items():
        if status in route.schemas:
            op["responses"][str(status)] = {
                "description": description,
                "content": {
                    "application/json": {
                        "schema": _component(route.schemas[status], schemas, "serialization")
                    }
                },
            }
        elif status >= 400:
            op["responses"][str(status)] = _error(description)
        elif status in (101, 204, 304):  # no body
            op["responses"][str(status)] = {"description": description}
        else:
            op["responses"][str(status)] = {
                "description": description,
                "content": {route.content_type: {"schema": {}}},
            }
    if route.authenticated:
        op["responses"].setdefault("401", _error("Not authenticated"))
        op["security"] = [{"session": []}, {"bearer": []}]
    if route.body is not None or route.request_content is not None:
        malformed = "Malformed JSON" if route.body is not None else "Malformed body"
        op["responses"].setdefault("400", _error(malformed))
        op["responses"].setdefault("422", _error("Invalid data"))
    if route.body is not None:
        # What read_json and aiohttp refuse before the body is parsed.
        op["responses"].setdefault("413", _error("The body is too large (details.limit_bytes)"))
        op["responses"].setdefault("415", _error("The body is not application/json"))
    op["responses"].setdefault("503", _error("Database or storage unavailable"))
    return op


def build_document(routes: Iterable[Route]) -> dict[str, Any]:
    schemas: dict[str, Any] = {"Error": ERROR_SCHEMA}
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        path = _PARAM.sub(r"{\1}", route.path)
        paths.setdefault(path, {})[route.method.lower()] = _operation(route, schemas)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Echora server API",
            "version": version("echora-server"),
            "description": 'Every error is JSON: {"error": {"code", "message", "details"?}}.',
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "session": {"type": "apiKey", "in": "cookie", "name": "echora_session"},
                "bearer": {"type": "http", "scheme": "bearer"},
            },
        },
    }


OPENAPI = web.AppKey("openapi", dict)


class OpenApiDocument(Shape):
    """An OpenAPI 3.1 document (this one)."""

    openapi: Literal["3.1.0"]
    info: dict[str, Any]
    paths: dict[str, Any]
    components: dict[str, Any]


async def openapi_document(request: web.Request) -> web.Response:
    return web.json_response(request.app[OPENAPI])


ROUTES: tuple[Route, ...] = (
    Route(
        "GET",
        "/api/openapi.json",
        openapi_document,
        "This OpenAPI document",
        "ops",
        authenticated=False,
        schemas={200: OpenApiDocument},
    ),
)
