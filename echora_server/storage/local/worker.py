"""Running blocking file calls in a thread without ever abandoning one."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

_T = TypeVar("_T")


class ThreadWorker:
    """One call at a time; ``settle`` waits out a cancelled ``run``'s thread, so cleanup never
    races a read or write still running."""

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
