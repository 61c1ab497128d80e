"""The application factory: a table of contents for the server. It does no I/O."""

from __future__ import annotations

from aiohttp import web

from echora_server.accounts.service import accounts_ctx
from echora_server.agents.bot_files import bot_files_ctx
from echora_server.agents.bots import bots_ctx
from echora_server.agents.inbox import inbox_ctx
from echora_server.agents.push import push_ctx
from echora_server.agents.sweeper import inbox_sweeper_ctx
from echora_server.audit.tally import tally_ctx
from echora_server.auth.token_cache import token_cache_ctx
from echora_server.channels.direct import direct_messages_ctx
from echora_server.channels.lifecycle import channel_lifecycle_ctx
from echora_server.channels.service import channels_ctx
from echora_server.config import CONFIG, Config
from echora_server.core.metrics import METRICS, Metrics
from echora_server.core.tasks import tasks_ctx
from echora_server.db.pool import pool_ctx
from echora_server.files.sweeper import sweeper_ctx
from echora_server.files.uploads import uploads_ctx
from echora_server.messages.service import messages_ctx
from echora_server.presence.service import presence_ctx
from echora_server.reactions.service import reactions_ctx
from echora_server.readstate.service import read_state_ctx
from echora_server.realtime.bus import bus_ctx
from echora_server.realtime.hub import close_websockets, hub_ctx
from echora_server.storage.factory import storage_ctx
from echora_server.tickets.service import tickets_ctx
from echora_server.web.forwarded import forwarded_middleware, parse_networks
from echora_server.web.middlewares import (
    add_request_id,
    error_middleware,
    metrics_middleware,
    request_context_middleware,
)
from echora_server.web.openapi import OPENAPI, build_document
from echora_server.web.ops import LIFECYCLE, Lifecycle
from echora_server.web.route_table import ROUTES, add_routes
from echora_server.web.server import drop_server_header
from echora_server.workspaces.service import workspaces_ctx
from echora_server.workspaces.settings import settings_ctx

# JSON bodies are small; file uploads stream and count their own bytes.
CLIENT_MAX_SIZE = 1024 * 1024


def create_app(config: Config) -> web.Application:
    app = web.Application(
        client_max_size=CLIENT_MAX_SIZE,
        # Outermost first: the client's address behind a proxy, then request id and metrics,
        # which see the shaped error responses.
        middlewares=[
            forwarded_middleware(parse_networks(config.trusted_proxies)),
            request_context_middleware,
            metrics_middleware,
            error_middleware,
        ],
    )
    app[CONFIG] = config
    app[METRICS] = Metrics()
    app[OPENAPI] = build_document(ROUTES)
    app[LIFECYCLE] = Lifecycle()
    add_routes(app)
    app.on_response_prepare.append(add_request_id)
    app.on_response_prepare.append(drop_server_header)
    # Started in this order, stopped in reverse: each needs those before it.
    app.cleanup_ctx.extend(
        [
            pool_ctx,
            tally_ctx,  # flushed before the pool closes
            token_cache_ctx,
            storage_ctx,
            tasks_ctx,  # drained before storage closes
            hub_ctx,
            bus_ctx,
            inbox_ctx,  # before any service that writes: every write stages bots' entries
            presence_ctx,
            accounts_ctx,
            channels_ctx,
            channel_lifecycle_ctx,
            direct_messages_ctx,
            workspaces_ctx,
            uploads_ctx,
            settings_ctx,
            tickets_ctx,
            messages_ctx,
            reactions_ctx,
            read_state_ctx,
            bots_ctx,
            push_ctx,
            bot_files_ctx,
            inbox_sweeper_ctx,
            sweeper_ctx,  # stopped first
        ]
    )
    app.on_shutdown.append(close_websockets)
    return app
