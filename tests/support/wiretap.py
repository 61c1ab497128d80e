"""Counting what crosses a FaultProxy: PostgreSQL round trips and HTTP requests to the store.

    pg = PgTap()
    async with FaultProxy(pg_socket, tap=pg.connection) as proxy: ...
    before = pg.round_trips; ...; assert pg.round_trips - before == 1

A PostgreSQL round trip is a frontend message that makes the server answer and wait: a Sync
(the end of an extended-protocol exchange, as asyncpg sends) or a simple Query. Requests to
the store are parsed from HTTP/1.1 as sent (Content-Length or chunked bodies skipped).
"""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")

_SSL_REQUEST = 80877103
_GSSENC_REQUEST = 80877104
_CANCEL_REQUEST = 80877102


class PgTap:
    def __init__(self) -> None:
        self.messages: list[str] = []  # frontend message types, in order, across connections
        self.connections = 0

    @property
    def round_trips(self) -> int:
        return sum(1 for m in self.messages if m in ("S", "Q"))

    def mark(self) -> int:
        return len(self.messages)

    def round_trips_since(self, mark: int) -> int:
        return sum(1 for m in self.messages[mark:] if m in ("S", "Q"))

    async def fewest_round_trips(
        self, call: Callable[[], Awaitable[T]], tries: int = 4
    ) -> tuple[int, T]:
        """The fewest round trips one ``call`` took over ``tries`` calls, and the last result.

        The tap counts every connection, so the app's background work (the push scan, the
        presence lease, the audit flush) and a pool connection that has not yet prepared a
        statement can only add to a call's count: the fewest is the call's own cost.
        """
        fewest, result = None, None
        for _ in range(tries):
            mark = self.mark()
            result = await call()
            taken = self.round_trips_since(mark)
            fewest = taken if fewest is None else min(fewest, taken)
        assert fewest is not None
        return fewest, result  # type: ignore[return-value]

    def connection(self) -> Callable[[bytes], None]:
        self.connections += 1
        buffer = bytearray()
        started = False

        def feed(data: bytes) -> None:
            nonlocal started
            buffer.extend(data)
            while True:
                if not started:  # untyped: SSLRequest, GSSENCRequest, then the startup
                    if len(buffer) < 8:
                        return
                    length, code = struct.unpack("!II", buffer[:8])
                    if len(buffer) < length:
                        return
                    del buffer[:length]
                    if code not in (_SSL_REQUEST, _GSSENC_REQUEST, _CANCEL_REQUEST):
                        started = True
                    continue
                if len(buffer) < 5:
                    return
                kind = chr(buffer[0])
                (length,) = struct.unpack("!I", buffer[1:5])
                if len(buffer) < 1 + length:
                    return
                del buffer[: 1 + length]
                self.messages.append(kind)

        return feed


@dataclass
class HttpRequest:
    method: str
    target: str
    headers: dict[str, str] = field(default_factory=dict)  # names lower-cased

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]


class HttpTap:
    def __init__(self) -> None:
        self.requests: list[HttpRequest] = []
        self.connections = 0

    def since(self, mark: int) -> list[HttpRequest]:
        return self.requests[mark:]

    def mark(self) -> int:
        return len(self.requests)

    def connection(self) -> Callable[[bytes], None]:
        self.connections += 1
        buffer = bytearray()
        body_left = 0  # Content-Length bytes still to skip
        chunked = False

        def feed(data: bytes) -> None:
            nonlocal body_left, chunked
            buffer.extend(data)
            while buffer:
                if body_left:
                    take = min(body_left, len(buffer))
                    del buffer[:take]
                    body_left -= take
                    continue
                if chunked:
                    end = buffer.find(b"\r\n")
                    if end < 0:
                        return
                    size = int(bytes(buffer[:end]).split(b";")[0], 16)
                    if size == 0:  # last chunk: no trailers expected from our clients
                        if len(buffer) < end + 4:
                            return
                        del buffer[: end + 4]
                        chunked = False
                        continue
                    if len(buffer) < end + 2 + size + 2:
                        return
                    del buffer[: end + 2 + size + 2]
                    continue
                end = buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = bytes(buffer[:end]).decode("latin-1").split("\r\n")
                del buffer[: end + 4]
                method, target, _ = head[0].split(" ", 2)
                headers = {}
                for line in head[1:]:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                self.requests.append(HttpRequest(method, target, headers))
                if headers.get("transfer-encoding", "").lower() == "chunked":
                    chunked = True
                else:
                    body_left = int(headers.get("content-length", "0"))

        return feed
