"""Work that must finish once started, even if its request is cancelled; shutdown waits for it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar

from aiohttp import web

T = TypeVar("T")


class OwnedTasks:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    async def run(self, work: Coroutine[Any, Any, T]) -> T:
        """Run ``work`` to its end even if the caller is cancelled; its result or error."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._forget)
        return await asyncio.shield(task)

    def _forget(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a caller that left has nobody to tell

    async def drain(self) -> None:
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


TASKS = web.AppKey("tasks", OwnedTasks)


async def tasks_ctx(app: web.Application) -> AsyncIterator[None]:
    """Started after storage, so shutdown drains the tasks before storage closes."""
    tasks = app[TASKS] = OwnedTasks()
    try:
        yield
    finally:
        await tasks.drain()
