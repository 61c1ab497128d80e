"""In-process fan-out: for a single server process."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
import structlog

from echora_server.realtime.events import Event
from echora_server.realtime.fanout.base import Deliver, OnLive

log = structlog.get_logger("echora.fanout")


class MemoryFanout:
    def __init__(self) -> None:
        self._deliver: Deliver | None = None

    async def start(self, deliver: Deliver, on_live: OnLive | None = None) -> None:
        self._deliver = deliver  # in one process nothing is ever missed: no gaps

    async def publish(self, event: Event) -> None:
        if self._deliver is not None:
            await self._deliver(event)

    async def publish_ephemeral(self, event: Event) -> None:
        await self.publish(event)

    async def stage_ephemeral(self, conn: asyncpg.Connection, events: Sequence[Event]) -> None:
        pass

    async def committed_ephemeral(self, events: Sequence[Event]) -> None:
        await self.committed(events)

    async def stage(self, conn: asyncpg.Connection, events: Sequence[Event]) -> None:
        pass  # nothing leaves the process before the commit

    async def committed(self, events: Sequence[Event]) -> None:
        for event in events:  # one failing delivery must not hold back the others
            try:
                await self.publish(event)
            except Exception:
                log.exception("event_deliver_failed", type=event.type)

    async def close(self) -> None:
        self._deliver = None
