"""The browser client's files and the API description."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from echora_server.keys import OPENAPI
from echora_server.resources import static_dir
from echora_server.routing import Route


def static_root() -> Path:
    return static_dir()


async def index(request: web.Request) -> web.FileResponse:
    response = web.FileResponse(static_root() / "index.html")
    response.headers["Cache-Control"] = "no-cache"
    return response


async def openapi_document(request: web.Request) -> web.Response:
    return web.json_response(request.app[OPENAPI])


# Two tables, not one: the API description is served among the ops routes, the client last.
OPENAPI_ROUTES: tuple[Route, ...] = (
    Route(
        "GET",
        "/api/openapi.json",
        openapi_document,
        "This OpenAPI document",
        "ops",
        authenticated=False,
    ),
)
CLIENT_ROUTES: tuple[Route, ...] = (
    Route(
        "GET",
        "/",
        index,
        "The browser client",
        "client",
        authenticated=False,
        content_type="text/html",
    ),
)
