"""Every feature's routes, in the order aiohttp matches and the OpenAPI document lists them."""

from __future__ import annotations

from aiohttp import web

from echora_server.accounts import handlers as accounts
from echora_server.channels import handlers as channels
from echora_server.core.route import Route
from echora_server.files import handlers as files
from echora_server.messages import handlers as messages
from echora_server.messages import websocket
from echora_server.web import openapi, ops, site
from echora_server.workspaces import handlers as workspaces

ROUTES: tuple[Route, ...] = (
    *ops.ROUTES,
    *openapi.ROUTES,
    *accounts.ROUTES,
    *workspaces.ROUTES,
    *channels.ROUTES,
    *messages.ROUTES,
    *websocket.ROUTES,
    *files.ROUTES,
    *site.ROUTES,
)


def add_routes(app: web.Application) -> None:
    for route in ROUTES:
        if route.allow_head:
            app.router.add_get(route.path, route.handler, allow_head=True)
        else:
            app.router.add_route(route.method, route.path, route.handler)
