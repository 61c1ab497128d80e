"""A real webhook receiver on 127.0.0.1: records every request it gets and answers as the
test says (204 by default)."""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from support.processes import free_port


@dataclass(frozen=True)
class Hit:
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() on arrival

    @property
    def id(self) -> str:
        return self.headers["webhook-id"]

    @property
    def attempt(self) -> int:
        return int(self.headers["echora-attempt"])

    @property
    def entry_id(self) -> int:
        return int(self.id.rsplit("_", 1)[1])

    def json(self) -> Any:
        return json.loads(self.body)


Answer = Callable[[Hit], web.StreamResponse | Awaitable[web.StreamResponse]]


class Receiver:
    def __init__(self) -> None:
        self.hits: list[Hit] = []
        self.answer: Answer = lambda hit: web.Response(status=204)
        self.url = ""
        self._arrived = asyncio.Event()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        hit = Hit(
            {k.lower(): v for k, v in request.headers.items()},
            await request.read(),
            time.monotonic(),
        )
        self.hits.append(hit)
        self._arrived.set()
        answer = self.answer(hit)
        return await answer if inspect.isawaitable(answer) else answer

    async def wait_for(self, count: int, timeout: float = 15) -> list[Hit]:
        """Until at least ``count`` hits arrived; all of them."""
        async with asyncio.timeout(timeout):
            while len(self.hits) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return list(self.hits)

    @classmethod
    def at(cls, url: str) -> Receiver:
        """A receiver's URL alone (one that is not running, or another name for one)."""
        receiver = cls()
        receiver.url = url
        return receiver

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Receiver]:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}/hook"
        try:
            yield self
        finally:
            await runner.cleanup()
