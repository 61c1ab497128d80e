"""Calls made in one turn of the event loop, run as one: when an event wakes a hundred long
polls (or push senders) at once, they take one database round trip between them instead of a
hundred, and nobody waits for a timer."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Mapping
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
A = TypeVar("A")
R = TypeVar("R")

RunBatch = Callable[[dict[K, A]], Awaitable[Mapping[K, R]]]


class Batcher(Generic[K, A, R]):
    """``await batcher(key, arg)`` joins the batch of this loop turn; the batch runs on the next
    turn as one ``run({key: arg, ...})``, whose mapping answers each caller (a key it leaves
    out answers ``default``; its error is every caller's). A key already in the open batch
    opens the next one, so ``run`` sees each key once: two polls of one bot never share a
    statement. At most ``max_size`` calls per batch. A result whose caller was cancelled
    meanwhile goes to ``unclaimed`` (a claim to release, say)."""

    def __init__(
        self,
        run: RunBatch[K, A, R],
        default: R,
        *,
        max_size: int = 500,
        unclaimed: Callable[[R], Awaitable[None]] | None = None,
    ) -> None:
        self._run = run
        self._unclaimed = unclaimed
        self._default = default
        self._max_size = max_size
        self._open: list[dict[K, tuple[A, asyncio.Future[R]]]] = []
        self._scheduled = False
        self._running: set[asyncio.Task[None]] = set()

    async def __call__(self, key: K, arg: A) -> R:
        loop = asyncio.get_running_loop()
        batch = next((b for b in self._open if key not in b and len(b) < self._max_size), None)
        if batch is None:
            batch = {}
            self._open.append(batch)
        future: asyncio.Future[R] = loop.create_future()
        batch[key] = (arg, future)
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self._scheduled = False
        batches, self._open = self._open, []
        for batch in batches:
            task = asyncio.ensure_future(self._answer(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _answer(self, batch: dict[K, tuple[A, asyncio.Future[R]]]) -> None:
        try:
            results = await self._run({key: arg for key, (arg, _) in batch.items()})
        except asyncio.CancelledError:  # shutting down
            for _, future in batch.values():
                future.cancel()
            raise
        except Exception as error:  # every caller hears it
            for _, future in batch.values():
                if not future.done():
                    future.set_exception(error)
            return
        left = []
        for key, (_, future) in batch.items():
            result = results.get(key, self._default)
            if not future.done():
                future.set_result(result)
            elif key in results:  # its caller has left
                left.append(result)
        if self._unclaimed is not None:
            for result in left:
                await self._unclaimed(result)

    async def close(self) -> None:
        """Wait for the batches under way (shutdown)."""
        while self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
