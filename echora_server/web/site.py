"""The browser client: its page and static files, under a strict content policy."""

from __future__ import annotations

from aiohttp import web

from echora_server.core.errors import NotFound
from echora_server.core.resources import static_dir
from echora_server.core.route import Route
from echora_server.storage.factory import STORAGE

# The page connects to its own origin, and to the store when uploads may go straight there
# (so the policy is a header only: a meta tag could not name the store).
CLIENT_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
    "media-src 'self'; connect-src 'self'{store}; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)


def client_headers(request: web.Request) -> dict[str, str]:
    store = request.app[STORAGE].direct_upload_origin
    return {
        "Content-Security-Policy": CLIENT_CSP.format(store=f" {store}" if store else ""),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
        # Module URLs carry no version: browsers revalidate (by ETag), not run stale code.
        "Cache-Control": "no-cache",
    }


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(static_dir() / "index.html", headers=client_headers(request))


async def static_file(request: web.Request) -> web.FileResponse:
    """A client file, jailed in static/; a missing one is a JSON 404 like every other error
    (aiohttp's static route answers plain text)."""
    root = static_dir().resolve()
    path = (root / request.match_info["filename"]).resolve()
    try:
        found = path.is_relative_to(root) and path.is_file()
    except OSError:  # a name the filesystem refuses (too long): no such file either
        found = False
    if not found:
        raise NotFound("No such file.")
    return web.FileResponse(path, headers=client_headers(request))


ROUTES: tuple[Route, ...] = (
    Route(
        "GET",
        "/",
        index,
        "The browser client",
        "client",
        authenticated=False,
        content_type="text/html",
    ),
    Route(
        "GET",
        "/static/{filename:.+}",
        static_file,
        "The browser client's static files",
        "client",
        authenticated=False,
        responses={200: "The file", 404: "No such file"},
        content_type="*/*",  # the file's own type
        path_params={"filename": {"type": "string"}},
        allow_head=True,
    ),
)
