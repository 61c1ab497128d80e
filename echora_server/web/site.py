"""The browser client's files and the API description."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from echora_server.core.errors import NotFound
from echora_server.core.resources import static_dir
from echora_server.core.route import Route
from echora_server.keys import OPENAPI

STATIC_PREFIX = "/static"


def static_root() -> Path:
    return static_dir()


# The page's own policy (also in a meta tag), plus what only a header can say.
CLIENT_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
    "media-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
CLIENT_HEADERS = {
    "Content-Security-Policy": CLIENT_CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    # Module URLs carry no version, so browsers revalidate (by ETag) instead of running
    # stale code after an upgrade.
    "Cache-Control": "no-cache",
}


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(static_root() / "index.html", headers=CLIENT_HEADERS)


async def static_file(request: web.Request) -> web.FileResponse:
    """A file of the browser client, jailed in static/; a missing one is a JSON 404 like
    every other error (aiohttp's own static route answers plain text)."""
    root = static_root().resolve()
    path = (root / request.match_info["filename"]).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise NotFound("No such file.")
    return web.FileResponse(path, headers=CLIENT_HEADERS)


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
