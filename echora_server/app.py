"""The application factory: a table of contents for the server. It does no I/O."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from echora_server.config import Config
from echora_server.db.pool import pool_ctx
from echora_server.errors import error_middleware
from echora_server.keys import CONFIG, LOGIN_LIMITER, METRICS, OPENAPI, STORAGE
from echora_server.logs import request_context_middleware
from echora_server.metrics import Metrics, metrics_middleware
from echora_server.openapi import build_document
from echora_server.ratelimit import RateLimiter
from echora_server.routes import add_routes
from echora_server.storage import create_storage

# JSON bodies are small; file uploads stream and count their own bytes.
CLIENT_MAX_SIZE = 1024 * 1024


async def storage_ctx(app: web.Application) -> AsyncIterator[None]:
    storage = create_storage(app[CONFIG])
    await storage.start()
    app[STORAGE] = storage
    try:
        yield
    finally:
        await storage.close()


def create_app(config: Config) -> web.Application:
    app = web.Application(
        client_max_size=CLIENT_MAX_SIZE,
        # Outermost first: request id and metrics see the shaped error responses.
        middlewares=[request_context_middleware, metrics_middleware, error_middleware],
    )
    app[CONFIG] = config
    app[METRICS] = Metrics()
    app[LOGIN_LIMITER] = RateLimiter(
        config.login_rate_per_minute, burst=config.login_rate_per_minute
    )
    app[OPENAPI] = build_document()
    add_routes(app)
    # Started in this order, stopped in reverse.
    app.cleanup_ctx.append(pool_ctx)
    app.cleanup_ctx.append(storage_ctx)
    return app
