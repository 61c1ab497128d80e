"""A bot's inbox: entries staged with the writes that caused them (``agents.staging``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from echora_server.agents.staging import InboxSink
from echora_server.config import CONFIG
from echora_server.realtime.bus import BUS


async def inbox_ctx(app: web.Application) -> AsyncIterator[None]:
    """After the bus, before any service that writes: every write then stages entries."""
    app[BUS].add_sink(InboxSink(app[CONFIG].inbox_ttl))
    yield
