"""Running blocking file calls in a thread without ever abandoning one."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

_T = TypeVar("_T")


class ThreadWorker:
    """Runs one blocking call at a time in a thread and remembers the one in flight.

    Cancelling ``run`` does not stop the thread; ``settle`` waits for it, so cleanup
    never races a write or read that is still running."""

    def __init__(self) -> None:
        self._inflight: asyncio.Future[Any] | None = None

    async def run(self, fn: Callable[..., _T], *args: Any) -> _T:
        task: asyncio.Future[_T] = asyncio.ensure_future(asyncio.to_thread(fn, *args))
        self._inflight = task
        return await asyncio.shield(task)

    async def settle(self) -> None:
        task = self._inflight
        if task is not None:
            await asyncio.wait([task])
            if not task.cancelled():
                task.exception()  # mark retrieved: the caller already saw it or left
