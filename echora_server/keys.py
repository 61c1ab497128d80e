"""Every typed application and request key, in one place (no string keys)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import asyncpg
from aiohttp import web

from echora_server.config import Config

if TYPE_CHECKING:
    from echora_server.auth.identity import Identity
    from echora_server.core.metrics import Metrics
    from echora_server.core.ratelimit import RateLimiter
    from echora_server.files.uploads import Uploader
    from echora_server.realtime.fanout.base import Fanout
    from echora_server.realtime.hub import Hub
    from echora_server.storage.base import Storage

CONFIG = web.AppKey("config", Config)
POOL = web.AppKey("pool", asyncpg.Pool)
# Keys whose types would import this module back are annotated rather than passed a type.
STORAGE: web.AppKey[Storage] = web.AppKey("storage")
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
LOGIN_LIMITER: web.AppKey[RateLimiter] = web.AppKey("login_limiter")
MESSAGE_LIMITER: web.AppKey[RateLimiter] = web.AppKey("message_limiter")
FANOUT: web.AppKey[Fanout] = web.AppKey("fanout")
HUB: web.AppKey[Hub] = web.AppKey("hub")
UPLOADER: web.AppKey[Uploader] = web.AppKey("uploader")
OPENAPI = web.AppKey("openapi", dict)

IDENTITY: web.RequestKey[Identity | None] = web.RequestKey("identity")
REQUEST_ID = web.RequestKey("request_id", str)
