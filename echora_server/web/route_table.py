"""The route table: every area's routes, joined in the order aiohttp matches them."""

from __future__ import annotations

from aiohttp import web

from echora_server.accounts import handlers as auth
from echora_server.channels import handlers as channels
from echora_server.core.metrics import get_metrics
from echora_server.core.route import Route
from echora_server.files import handlers as files
from echora_server.messages import handlers as messages
from echora_server.messages import websocket as ws
from echora_server.web import health, site
from echora_server.workspaces import handlers as members

# The two routes whose handlers live outside echora_server/handlers/.
METRICS_ROUTE = Route(
    "GET",
    "/metrics",
    get_metrics,
    "Prometheus metrics",
    "ops",
    authenticated=False,
    content_type="text/plain",
)
WEBSOCKET_ROUTE = Route(
    "GET",
    "/api/ws",
    ws.websocket,
    "WebSocket: live events, message.send, resume (see the ws module for the protocol)",
    "messages",
    responses={
        101: "Switching protocols",
        401: "Not authenticated",
        403: "Cookie login from an origin that is not allowed",
    },
)

# Routes are registered, and documented in the OpenAPI document, in this order.
ROUTES: tuple[Route, ...] = (
    *health.ROUTES,
    METRICS_ROUTE,
    *site.OPENAPI_ROUTES,
    *auth.ROUTES,
    *members.ROUTES,
    *channels.ROUTES,
    *messages.ROUTES,
    WEBSOCKET_ROUTE,
    *files.ROUTES,
    *site.CLIENT_ROUTES,
)

STATIC_PREFIX = site.STATIC_PREFIX


def add_routes(app: web.Application) -> None:
    for route in ROUTES:
        if route.allow_head:
            app.router.add_get(route.path, route.handler, allow_head=True)
        else:
            app.router.add_route(route.method, route.path, route.handler)
    # Documented by hand in openapi.py: the filename is a path, not an id.
    app.router.add_get(STATIC_PREFIX + "/{filename:.+}", site.static_file)
