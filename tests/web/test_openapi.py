"""The OpenAPI document is valid and describes exactly the routes the app serves."""

from __future__ import annotations

import re

from aiohttp import web
from aiohttp.test_utils import TestClient
from openapi_spec_validator import validate


def served_routes(app: web.Application) -> set[tuple[str, str]]:
    routes = set()
    for route in app.router.routes():
        if route.method == "HEAD":
            continue  # added automatically beside every GET
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        if path is None and "prefix" in info:
            path = info["prefix"] + "/{filename}"
        routes.add((route.method.lower(), re.sub(r"\{(\w+)(:[^}]*)?\}", r"{\1}", path)))
    return routes


async def test_document_is_valid_and_complete(client: TestClient) -> None:
    response = await client.get("/api/openapi.json")
    assert response.status == 200
    document = await response.json()
    validate(document)
    documented = {(method, path) for path, ops in document["paths"].items() for method in ops}
    assert documented == served_routes(client.app)


async def test_every_operation_documents_errors(client: TestClient) -> None:
    document = await (await client.get("/api/openapi.json")).json()
    for path, ops in document["paths"].items():
        for method, op in ops.items():
            errors = [s for s in op["responses"] if s.startswith(("4", "5"))]
            assert errors, (method, path)
            if op.get("requestBody"):
                assert {"400", "422"} <= set(op["responses"]), (method, path)


async def test_every_json_answer_has_a_schema(client: TestClient) -> None:
    """Success bodies included: the contract fuzz test holds the server to them."""
    document = await (await client.get("/api/openapi.json")).json()
    for path, ops in document["paths"].items():
        for method, op in ops.items():
            for status, response in op["responses"].items():
                media = response.get("content", {}).get("application/json")
                if media is not None:
                    assert media["schema"].get("$ref"), (method, path, status)
    schemas = document["components"]["schemas"]
    assert schemas["Error"]["additionalProperties"] is False
    assert all(s.get("additionalProperties") is False for n, s in schemas.items() if n != "Error")
