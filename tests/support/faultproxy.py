"""A TCP proxy for fault injection: cut a dependency (S3, PostgreSQL) at will.

    async with FaultProxy(("127.0.0.1", 9000)) as proxy:   # or FaultProxy("/run/pg/.s.PGSQL.5432")
        url = proxy.url                                     # point the client here
        proxy.block()    # live connections are reset, new ones are closed at once
        proxy.unblock()  # new connections are forwarded again
        proxy.reset()    # live connections are reset, new ones forwarded
        proxy.silence()  # a hung store: nothing passes, new connections are accepted, unanswered
        proxy.speak()    # silenced connections are reset, new ones forwarded again

``tap`` (see support.wiretap) is given every connection's client-to-upstream bytes in order.
It listens on 127.0.0.1 on a free port. ``block``/``unblock`` are plain functions, so a
test can call them from anywhere, including inside a chunk generator mid-upload.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from types import TracebackType

_READ_SIZE = 64 * 1024
# Called once per forwarded connection; the function it returns sees what the client sends.
TapFactory = Callable[[], Callable[[bytes], None]]


class _Link:
    """One proxied connection: a client side and an upstream side."""

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None

    def abort(self) -> None:
        """Drop both sides at once, unsent data included (a cut cable)."""
        self.client.transport.abort()
        if self.upstream is not None:
            self.upstream.transport.abort()

    def close(self) -> None:
        self.client.close()
        if self.upstream is not None:
            self.upstream.close()


class FaultProxy:
    def __init__(
        self,
        target: tuple[str, int] | str,
        *,
        host: str = "127.0.0.1",
        tap: TapFactory | None = None,
    ) -> None:
        """``target`` is ``(host, port)`` for TCP or a path for a unix socket."""
        self.target = target
        self.tap = tap
        self.host = host
        self.port = 0
        self.blocked = False
        self.silent = False
        self.accepted = 0  # connections forwarded
        self.refused = 0  # connections closed because the proxy was blocked
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._handle, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        # Handlers end by themselves once their sockets are gone; cancelling them
        # would make asyncio's stream callback log the CancelledError as an error.
        self._abort_all()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)

    async def __aenter__(self) -> FaultProxy:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def block(self) -> None:
        """Reset every live connection and refuse new ones until ``unblock``."""
        self.blocked = True
        self._abort_all()

    def reset(self) -> None:
        """Reset every live connection (a dropped link); new ones are forwarded."""
        self._abort_all()

    def unblock(self) -> None:
        self.blocked = False

    def silence(self) -> None:
        """From now on nothing passes either way; connections stay open, reads go unanswered."""
        self.silent = True

    def speak(self) -> None:
        self.silent = False
        self._abort_all()  # what was silenced is broken for good, as after a real hang

    async def wait_refused(self, count: int, timeout: float = 10.0) -> None:
        """Wait until at least ``count`` connections have been refused in total."""
        async with asyncio.timeout(timeout):
            while self.refused < count:
                await asyncio.sleep(0.01)

    def _abort_all(self) -> None:
        for link in list(self._links):
            link.abort()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        link = _Link(writer)
        self._links.add(link)
        try:
            if self.blocked:
                self.refused += 1
                return
            if self.silent:  # accepted, read, never answered
                with contextlib.suppress(OSError):
                    while await reader.read(_READ_SIZE):
                        pass
                return
            try:
                if isinstance(self.target, str):
                    up_reader, up_writer = await asyncio.open_unix_connection(self.target)
                else:
                    up_reader, up_writer = await asyncio.open_connection(*self.target)
            except OSError:
                return
            link.upstream = up_writer
            if self.blocked:  # blocked while we were connecting
                self.refused += 1
                return
            self.accepted += 1
            feed = self.tap() if self.tap is not None else None
            await asyncio.gather(
                self._pump(reader, up_writer, feed), self._pump(up_reader, writer, None)
            )
        finally:
            self._links.discard(link)
            link.close()  # a no-op after abort(); no half-open leftovers
            self._tasks.discard(task)

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        feed: Callable[[bytes], None] | None,
    ) -> None:
        """Copy one direction until EOF or a reset, then pass the EOF on (dropping all while
        silent)."""
        with contextlib.suppress(OSError):
            while data := await reader.read(_READ_SIZE):
                if self.silent:
                    continue
                if feed is not None:
                    feed(data)
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof() and not self.silent:
                writer.write_eof()
