"""Every feature's routes, in the order aiohttp matches and the OpenAPI document lists them."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from aiohttp import hdrs, web
from aiohttp.http import HttpVersion11

from echora_server.accounts import handlers as accounts
from echora_server.agents import handlers as agents
from echora_server.channels import handlers as channels
from echora_server.channels import lifecycle_handlers as channel_lifecycle
from echora_server.core.route import Check, Route
from echora_server.files import handlers as files
from echora_server.messages import handlers as messages
from echora_server.messages import websocket
from echora_server.reactions import handlers as reactions
from echora_server.readstate import handlers as readstate
from echora_server.tickets import handlers as tickets
from echora_server.web import openapi, ops, site
from echora_server.web.middlewares import answer, bind_request_id, error_response, log_request
from echora_server.workspaces import audit as workspace_audit
from echora_server.workspaces import handlers as workspaces
from echora_server.workspaces import settings_handlers

ROUTES: tuple[Route, ...] = (
    *ops.ROUTES,
    *openapi.ROUTES,
    *accounts.ROUTES,
    *workspaces.ROUTES,
    *workspace_audit.ROUTES,
    *settings_handlers.ROUTES,
    *channels.ROUTES,
    *channel_lifecycle.ROUTES,
    *readstate.ROUTES,
    *messages.ROUTES,
    *reactions.ROUTES,
    *websocket.ROUTES,
    *files.ROUTES,
    *tickets.ROUTES,
    *agents.ROUTES,
    *site.ROUTES,
)


def add_routes(app: web.Application) -> None:
    for route in ROUTES:
        if route.allow_head:
            app.router.add_get(route.path, route.handler, allow_head=True)
        elif route.expect is not None:
            expect = expect_handler(route.expect)
            app.router.add_route(route.method, route.path, route.handler, expect_handler=expect)
        else:
            app.router.add_route(route.method, route.path, route.handler)


def expect_handler(check: Check) -> Callable[[web.Request], Awaitable[web.StreamResponse | None]]:
    """``Expect: 100-continue``: the final status first when ``check`` refuses, so the client
    never sends a body only to be refused. aiohttp runs this before the middlewares."""

    async def handle(request: web.Request) -> web.StreamResponse | None:
        bind_request_id(request)
        started = time.perf_counter()
        if request.headers.get(hdrs.EXPECT, "").strip().lower() != "100-continue":
            response: web.StreamResponse = error_response(
                417, "expectation_failed", "Only Expect: 100-continue is understood."
            )
        else:
            try:
                await check(request)
            except Exception as exc:
                response = answer(request, exc)
            else:
                if request.version >= HttpVersion11:
                    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                return None
        response.force_close()  # the body will not come: the connection ends here
        log_request(request, response.status, started, expect="refused")
        return response

    return handle
