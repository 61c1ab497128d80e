"""The fan-out interface."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import asyncpg

from echora_server.realtime.events import Event

Deliver = Callable[[Event], Awaitable[None]]
# Told when events may be missed from now on (False), and when they flow again (True).
OnLive = Callable[[bool], None]


class Fanout(Protocol):
    async def start(self, deliver: Deliver, on_live: OnLive | None = None) -> None:
        """Begin delivering every published event (from any process) to ``deliver``;
        ``on_live`` hears of every gap in that delivery, as it opens and as it closes."""

    async def publish(self, event: Event) -> None:
        """Send an event whose write has committed."""

    async def publish_ephemeral(self, event: Event) -> None:
        """Send an event nothing stores (typing): to the processes listening now, else lost."""

    async def stage_ephemeral(self, conn: asyncpg.Connection, events: Sequence[Event]) -> None:
        """Inside a transaction on ``conn``: events nothing stores, sent by its commit, in
        commit order among processes (presence)."""

    async def committed_ephemeral(self, events: Sequence[Event]) -> None:
        """After that transaction committed: send what ``stage_ephemeral`` could not."""

    async def stage(self, conn: asyncpg.Connection, events: Sequence[Event]) -> None:
        """Inside the write's transaction on ``conn``: the events go out if it commits."""

    async def committed(self, events: Sequence[Event]) -> None:
        """After that transaction committed: send what ``stage`` could not."""

    async def close(self) -> None: ...
