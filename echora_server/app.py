"""The application factory: a table of contents for the server. It does no I/O."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import WSCloseCode, web

from echora_server.config import Config
from echora_server.core.errors import error_middleware
from echora_server.core.metrics import Metrics, metrics_middleware
from echora_server.core.ratelimit import RateLimiter
from echora_server.db.pool import database_dsn, pool_ctx
from echora_server.files.sweeper import sweeper_ctx
from echora_server.files.uploads import uploads_ctx
from echora_server.keys import (
    CONFIG,
    FANOUT,
    HUB,
    LOGIN_LIMITER,
    MESSAGE_LIMITER,
    METRICS,
    OPENAPI,
    POOL,
    STORAGE,
)
from echora_server.realtime.fanout.base import Fanout
from echora_server.realtime.fanout.memory import MemoryFanout
from echora_server.realtime.fanout.postgres import PostgresFanout
from echora_server.realtime.hub import Hub
from echora_server.storage import create_storage
from echora_server.web.logs import request_context_middleware
from echora_server.web.openapi import build_document
from echora_server.web.route_table import add_routes

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


def create_fanout(app: web.Application) -> Fanout:
    config = app[CONFIG]
    if config.fanout == "memory":
        return MemoryFanout()
    return PostgresFanout(app[POOL], database_dsn(config))


async def hub_ctx(app: web.Application) -> AsyncIterator[None]:
    """The WebSocket hub, fed by the fan-out backend (after the pool, before sweepers)."""
    hub = app[HUB] = Hub(app[CONFIG].ws_send_buffer)
    hub.start()
    fanout = create_fanout(app)
    try:
        await fanout.start(hub.deliver)
        app[FANOUT] = fanout
        try:
            yield
        finally:
            await fanout.close()
    finally:
        await hub.stop()


async def close_websockets(app: web.Application) -> None:
    await app[HUB].close_all(WSCloseCode.GOING_AWAY, "server shutdown")


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
    app[MESSAGE_LIMITER] = RateLimiter(
        config.message_rate_per_minute, burst=config.message_rate_burst
    )
    app[OPENAPI] = build_document()
    add_routes(app)
    # Started in this order, stopped in reverse.
    app.cleanup_ctx.append(pool_ctx)
    app.cleanup_ctx.append(storage_ctx)
    app.cleanup_ctx.append(hub_ctx)
    app.cleanup_ctx.append(uploads_ctx)  # its cleanups need storage
    app.cleanup_ctx.append(sweeper_ctx)  # stopped first: a pass needs pool and storage
    app.on_shutdown.append(close_websockets)
    return app
