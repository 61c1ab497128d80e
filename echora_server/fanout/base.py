"""The fan-out interface."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from echora_server.events import Event

Deliver = Callable[[Event], Awaitable[None]]


class Fanout(Protocol):
    async def start(self, deliver: Deliver) -> None:
        """Begin delivering every published event (from any process) to ``deliver``."""

    async def publish(self, event: Event) -> None: ...

    async def close(self) -> None: ...
