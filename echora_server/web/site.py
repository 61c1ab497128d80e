"""The browser client: its page and static files, under a strict content policy."""

from __future__ import annotations

from aiohttp import web

from echora_server.core.errors import NotFound
from echora_server.core.resources import static_dir
from echora_server.core.route import Route

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
    # Module URLs carry no version: browsers revalidate (by ETag) rather than run stale code.
    "Cache-Control": "no-cache",
}


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(static_dir() / "index.html", headers=CLIENT_HEADERS)


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
    return web.FileResponse(path, headers=CLIENT_HEADERS)


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
