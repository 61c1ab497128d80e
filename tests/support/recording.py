"""A real fan-out for tests that records every published event before passing it on."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestClient

from echora_server.realtime.bus import BUS
from echora_server.realtime.events import Event
from echora_server.realtime.fanout.base import Deliver, Fanout


class RecordingFanout:
    """Implements the Fanout protocol around the app's own backend, so the hub still works."""

    def __init__(self, inner: Fanout) -> None:
        self.inner = inner
        self.events: list[Event] = []

    async def start(self, deliver: Deliver) -> None:
        await self.inner.start(deliver)

    async def publish(self, event: Event) -> None:
        self.events.append(event)
        await self.inner.publish(event)

    async def publish_ephemeral(self, event: Event) -> None:
        self.events.append(event)
        await self.inner.publish_ephemeral(event)

    # Presence's notifications: passed on, not recorded (sockets opened by any test make
    # them, which would change what tests of other events count).
    async def stage_ephemeral(self, conn: asyncpg.Connection, events: Sequence[Event]) -> None:
        await self.inner.stage_ephemeral(conn, events)

    async def committed_ephemeral(self, events: Sequence[Event]) -> None:
        await self.inner.committed_ephemeral(events)

    async def stage(self, conn: asyncpg.Connection, events: Sequence[Event]) -> None:
        await self.inner.stage(conn, events)

    async def committed(self, events: Sequence[Event]) -> None:
        self.events.extend(events)  # recorded once they are out, as publish() does
        await self.inner.committed(events)

    async def close(self) -> None:
        await self.inner.close()

    def of_type(self, kind: str) -> list[Event]:
        return [e for e in self.events if e.type == kind]


RECORDER = web.AppKey("test_recorder", RecordingFanout)


async def record_events(app: web.Application) -> AsyncIterator[None]:
    """A cleanup context appended after create_app's: wraps the started fan-out. The
    wrapped backend is still closed by its own context."""
    bus = app[BUS]
    recorder = bus.fanout = RecordingFanout(bus.fanout)
    app[RECORDER] = recorder
    yield


def recording_app(app: web.Application) -> web.Application:
    app.cleanup_ctx.append(record_events)
    return app


def recorder(client: TestClient) -> RecordingFanout:
    return client.app[RECORDER]
