"""The event bus: events leave only with the commit of the write that made them. A write appends
them in ``EventBus.transaction`` (on PostgreSQL the NOTIFY is part of it, so no crash separates
a message from its event) or calls ``publish`` after its commit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Protocol

import asyncpg
import structlog
from aiohttp import web

from echora_server.auth.token_cache import TOKEN_CACHE, TokenCache, forget_revoked
from echora_server.config import CONFIG, Config
from echora_server.db.pool import POOL, database_dsn
from echora_server.realtime.events import CREDENTIAL_REVOKED, Event
from echora_server.realtime.fanout.base import Deliver, Fanout, OnLive
from echora_server.realtime.fanout.memory import MemoryFanout
from echora_server.realtime.fanout.postgres import PostgresFanout
from echora_server.realtime.hub import HUB

log = structlog.get_logger("echora.events")


class Sink(Protocol):
    async def stage(self, conn: asyncpg.Connection, events: list[Event]) -> None:
        """Write what the events imply inside their transaction; may append internal events."""


class EventBus:
    def __init__(self, fanout: Fanout, deliver: Deliver) -> None:
        self.fanout = fanout
        self._deliver = deliver
        self._sinks: list[Sink] = []
        self._listeners: list[Deliver] = []
        self._live_listeners: list[OnLive] = []

    def add_sink(self, sink: Sink) -> None:
        """A feature that records events durably (the bots' inbox), in the same transaction."""
        self._sinks.append(sink)

    def add_listener(self, listener: Deliver) -> None:
        """Called with every event the fan-out delivers to this process, after the hub."""
        self._listeners.append(listener)

    def add_live_listener(self, listener: OnLive) -> None:
        """Told when events may be missed from now on (False), and when they flow again."""
        self._live_listeners.append(listener)

    def live_changed(self, live: bool) -> None:
        for listener in self._live_listeners:
            try:
                listener(live)
            except Exception:
                log.exception("event_live_listener_failed")

    async def deliver(self, event: Event) -> None:
        await self._deliver(event)
        for listener in self._listeners:
            try:
                await listener(event)
            except Exception:
                log.exception("event_listener_failed", type=event.type)

    async def publish(self, *events: Event) -> None:
        """After the commit; a failure is logged, not raised: clients catch up with ``resume``."""
        for event in events:
            try:
                await self.fanout.publish(event)
            except Exception:
                log.exception("event_publish_failed", type=event.type, channel_id=event.channel_id)

    async def publish_ephemeral(self, event: Event) -> None:
        """Best effort, stored nowhere (typing): a failure is logged, not raised."""
        try:
            await self.fanout.publish_ephemeral(event)
        except Exception:
            log.warning("event_publish_failed", type=event.type, exc_info=True)

    @asynccontextmanager
    async def transaction(self, conn: asyncpg.Connection) -> AsyncIterator[list[Event]]:
        events: list[Event] = []
        async with conn.transaction():
            yield events
            await self.stage(conn, events)
        await self.committed(events)

    @asynccontextmanager
    async def ephemeral_transaction(self, conn: asyncpg.Connection) -> AsyncIterator[list[Event]]:
        """Events stored nowhere, sent by the commit of this transaction (on PostgreSQL
        their NOTIFY is in it: processes hear them in commit order). Not for bots' inboxes."""
        events: list[Event] = []
        async with conn.transaction():
            yield events
            await self.fanout.stage_ephemeral(conn, events)
        if events:
            try:
                await self.fanout.committed_ephemeral(events)
            except Exception:  # the write stands
                log.exception("event_publish_failed", types=[event.type for event in events])

    async def stage(self, conn: asyncpg.Connection, events: list[Event]) -> None:
        if events:
            for sink in self._sinks:
                await sink.stage(conn, events)
            await self.fanout.stage(conn, events)

    async def committed(self, events: list[Event]) -> None:
        if not events:
            return
        try:
            await self.fanout.committed(events)
        except Exception:  # as in publish(): the write stands
            log.exception("event_publish_failed", types=[event.type for event in events])


def create_fanout(config: Config, pool: asyncpg.Pool) -> Fanout:
    if config.fanout == "memory":
        return MemoryFanout()
    return PostgresFanout(pool, database_dsn(config))


BUS = web.AppKey("bus", EventBus)


def with_token_cache(deliver: Deliver, tokens: TokenCache) -> Deliver:
    """``deliver``, after telling the token cache of revocations."""

    async def deliver_event(event: Event) -> None:
        if event.type == CREDENTIAL_REVOKED:
            forget_revoked(tokens, event.data)
        await deliver(event)

    return deliver_event


def cache_follows(tokens: TokenCache) -> OnLive:
    def on_live(live: bool) -> None:
        if live:
            tokens.events_restored()
        else:
            tokens.events_lost()

    return on_live


async def bus_ctx(app: web.Application) -> AsyncIterator[None]:
    fanout = create_fanout(app[CONFIG], app[POOL])
    tokens = app[TOKEN_CACHE]
    bus = app[BUS] = EventBus(fanout, with_token_cache(app[HUB].deliver, tokens))
    bus.add_live_listener(cache_follows(tokens))
    await fanout.start(bus.deliver, bus.live_changed)
    try:
        yield
    finally:
        await fanout.close()
