"""Kernel-side relaying between real TCP sockets on 127.0.0.1, and the S3 response head
reader that leaves the body on the socket for it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field

import pytest

from echora_server.storage import splice
from echora_server.storage.base import StorageError
from echora_server.storage.s3.socket_reader import S3SocketReader, open_socket_reader

pytestmark = pytest.mark.skipif(not splice.AVAILABLE, reason="needs os.splice (Linux)")

MiB = 1024 * 1024


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


@contextlib.contextmanager
def tcp_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """Two connected non-blocking TCP sockets on 127.0.0.1 (closed at the end)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        a = socket.create_connection(listener.getsockname())
        b, _ = listener.accept()
    for sock in (a, b):
        sock.setblocking(False)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


async def receive_all(sock: socket.socket) -> bytes:
    loop = asyncio.get_running_loop()
    received = bytearray()
    while chunk := await loop.sock_recv(sock, MiB):
        received += chunk
    return bytes(received)


async def send_and_close(sock: socket.socket, data: bytes) -> None:
    await asyncio.get_running_loop().sock_sendall(sock, data)
    sock.shutdown(socket.SHUT_WR)


async def cancelled(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_moves_exactly_count_bytes_and_not_one_more() -> None:
    data = payload(5 * MiB + 17)
    count = 4 * MiB + 3
    with tcp_pair() as (feeder, source), tcp_pair() as (target, sink):
        fds = open_fds()
        sending = asyncio.create_task(send_and_close(feeder, data))
        receiving = asyncio.create_task(receive_all(sink))
        moved = await splice.splice(source, target.fileno(), count, read_timeout=5)
        assert open_fds() == fds  # its pipe and its duplicate descriptor are closed
        target.shutdown(socket.SHUT_WR)
        assert moved == count
        assert await receiving == data[:count]
        # The rest is still on the source socket, untouched.
        assert await receive_all(source) == data[count:]
        await sending


async def test_a_source_that_ends_early_gives_fewer_bytes() -> None:
    data = payload(300_000)
    with tcp_pair() as (feeder, source), tcp_pair() as (target, sink):
        receiving = asyncio.create_task(receive_all(sink))
        await send_and_close(feeder, data)
        moved = await splice.splice(source, target.fileno(), MiB, read_timeout=5)
        target.shutdown(socket.SHUT_WR)
        assert moved == len(data)
        assert await receiving == data


async def test_a_stalled_source_raises_after_the_read_timeout() -> None:
    with tcp_pair() as (feeder, source), tcp_pair() as (target, sink):
        await asyncio.get_running_loop().sock_sendall(feeder, b"x" * 1000)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(splice.SourceError):
            await splice.splice(source, target.fileno(), MiB, read_timeout=0.3)
        assert 0.3 <= loop.time() - started < 3
        assert await loop.sock_recv(sink, 4096) == b"x" * 1000


async def test_a_slow_source_is_relayed_without_waiting_for_a_batch() -> None:
    """Bytes short of a batch still reach the target at once, not after the read timeout."""
    data = payload(3 * MiB)
    loop = asyncio.get_running_loop()
    with tcp_pair() as (feeder, source), tcp_pair() as (target, sink):
        task = asyncio.create_task(
            splice.splice(source, target.fileno(), len(data), read_timeout=30)
        )
        await loop.sock_sendall(feeder, data[:1000])
        started = loop.time()
        async with asyncio.timeout(5):
            first = await loop.sock_recv(sink, 4096)
        assert first == data[: len(first)] and loop.time() - started < 1
        await send_and_close(feeder, data[1000:])
        assert await task == len(data)
        target.shutdown(socket.SHUT_WR)
        assert first + await receive_all(sink) == data


async def test_a_trickling_source_is_not_silent() -> None:
    """A store sending less than a batch per read timeout, but never silent that long."""
    pieces = [payload(100, seed=n) for n in range(12)]
    loop = asyncio.get_running_loop()
    with tcp_pair() as (feeder, source), tcp_pair() as (target, sink):

        async def trickle() -> None:
            for piece in pieces:
                await loop.sock_sendall(feeder, piece)
                await asyncio.sleep(0.1)
            feeder.shutdown(socket.SHUT_WR)

        sending = asyncio.create_task(trickle())
        receiving = asyncio.create_task(receive_all(sink))
        moved = await splice.splice(source, target.fileno(), MiB, read_timeout=0.3)
        target.shutdown(socket.SHUT_WR)
        await sending
        assert moved == 1200
        assert await receiving == b"".join(pieces)


async def test_a_reset_source_raises_source_error() -> None:
    with tcp_pair() as (feeder, source), tcp_pair() as (target, _sink):
        feeder.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        feeder.close()  # linger 0: a reset, not an end
        await asyncio.sleep(0.05)
        with pytest.raises(splice.SourceError):
            await splice.splice(source, target.fileno(), MiB, read_timeout=5)


async def test_a_target_that_left_raises_connection_error() -> None:
    data = payload(8 * MiB)
    with tcp_pair() as (feeder, source), tcp_pair() as (target, sink):
        sending = asyncio.create_task(send_and_close(feeder, data))
        sink.close()
        with pytest.raises(ConnectionError):
            await splice.splice(source, target.fileno(), len(data), read_timeout=5)
        await cancelled(sending)


async def test_cancelled_midway_closes_what_it_opened() -> None:
    """A target that stops reading holds the splice; cancelling it leaks no descriptor."""
    with tcp_pair() as (feeder, source), tcp_pair() as (target, _sink):
        fds = open_fds()
        sending = asyncio.create_task(send_and_close(feeder, payload(16 * MiB)))
        task = asyncio.create_task(splice.splice(source, target.fileno(), 16 * MiB, read_timeout=5))
        await asyncio.sleep(0.3)  # the sink reads nothing: the target's buffer fills
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert open_fds() == fds
        await cancelled(sending)


# --- the S3 response head -------------------------------------------------------------------

Answer = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class Store:
    """What the fake store saw: request heads, and each client closing its socket."""

    url: str
    heads: list[bytes] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait_closed(self) -> None:
        """Until the client closed the connection (its socket was closed)."""
        async with asyncio.timeout(2):
            await self.closed.wait()


@contextlib.asynccontextmanager
async def http_server(answer: Answer) -> AsyncIterator[Store]:
    """A TCP server on 127.0.0.1 that records each request head, lets ``answer`` reply,
    ends its side, then notes when the client closes its own."""
    store = Store("")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            store.heads.append(await reader.readuntil(b"\r\n\r\n"))
            await answer(reader, writer)
            writer.write_eof()
            await reader.read()  # the client's end: its socket was closed
            store.closed.set()
        except ConnectionError:
            store.closed.set()
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    store.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        yield store
    finally:
        server.close()
        await server.wait_closed()


def replying(*pieces: bytes, pause: float = 0.0) -> Answer:
    async def answer(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for piece in pieces:
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(pause)

    return answer


async def open_reader(url: str, start: int = 0, end: int | None = None) -> S3SocketReader | None:
    return await open_socket_reader(url, start=start, end=end, connect_timeout=2, read_timeout=2)


async def test_the_head_is_read_exactly_even_in_pieces() -> None:
    body = payload(200_000)
    head = b'HTTP/1.1 200 OK\r\nContent-Length: 200000\r\nETag: "x"\r\n\r\n'
    # The blank line itself straddles two segments.
    pieces = (head[:10], head[10:-3], head[-3:] + body[:5], body[5:])
    async with http_server(replying(*pieces, pause=0.05)) as store:
        reader = await open_reader(f"{store.url}/bucket/files/1/k?X-Amz-Signature=abc")
        assert reader is not None
        async with reader:
            assert (reader.size, reader.length) == (len(body), len(body))
            assert b"".join([c async for c in reader.chunks(65536)]) == body
        await store.wait_closed()
    host = store.url.removeprefix("http://")
    assert store.heads == [
        f"GET /bucket/files/1/k?X-Amz-Signature=abc HTTP/1.1\r\nHost: {host}\r\n"
        "Connection: close\r\n\r\n".encode()
    ]


async def test_a_ranged_answer_is_checked_against_the_request() -> None:
    body = payload(1000)
    head = b"HTTP/1.1 206 Partial Content\r\nContent-Length: 1000\r\n"
    good = head + b"Content-Range: bytes 5000-5999/9000\r\n\r\n" + body
    async with http_server(replying(good)) as store:
        reader = await open_reader(f"{store.url}/b/k?s=1", 5000, 5999)
        assert reader is not None
        async with reader:
            assert (reader.size, reader.length) == (9000, 1000)
            assert reader.socket_body().count == 1000  # offered, nothing read yet
            assert b"".join([c async for c in reader.chunks(300)]) == body
            with pytest.raises(RuntimeError):  # its bytes were read: no longer offered
                reader.socket_body()
    assert b"\r\nRange: bytes=5000-5999\r\n" in store.heads[0]
    wrong_start = head + b"Content-Range: bytes 0-999/9000\r\n\r\n" + body
    async with http_server(replying(wrong_start)) as store:
        assert await open_reader(f"{store.url}/b/k?s=1", 5000, 5999) is None
        await store.wait_closed()


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 5\r\n\r\nnope!",
        b"HTTP/1.1 503 Slow Down\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 307 Temporary Redirect\r\nLocation: http://x/\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Encoding: gzip\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\n\r\nhello",  # no length
        b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nbroken header\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nX: a\r\n Content-Length: 5\r\n\r\nhello",  # folded line
        b"HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\nhello",  # space before the colon
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nContent-Length: \xb2\r\n\r\nhello",  # a digit, not ASCII
        b"HTTP/1.1 2000 OK\r\nContent-Length: 5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n",  # closed inside the head
        b"HTTP/1.1 200 OK\r\nX: " + b"y" * (70 * 1024) + b"\r\n\r\n",  # a head too long
        b"",  # closed at once
    ],
    ids=[
        "404", "503", "redirect", "chunked", "gzip", "no-length", "http1.0", "malformed",
        "folded", "space-colon", "two-lengths", "latin1-digit", "status-2000",
        "cut-head", "huge-head", "closed",
    ],
)  # fmt: skip
async def test_anything_but_a_plain_success_gives_none(answer: bytes) -> None:
    async with http_server(replying(answer)) as store:
        assert await open_reader(f"{store.url}/b/k?s=1") is None
        await store.wait_closed()  # and its socket is closed


async def silent(reader: asyncio.StreamReader, _: asyncio.StreamWriter) -> None:
    await reader.read()  # until the client closes


async def test_no_store_gives_none_a_silent_one_an_error_in_time() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
    assert await open_reader(f"http://127.0.0.1:{port}/b/k?s=1") is None  # refused
    assert await open_reader("https://127.0.0.1:1/b/k?s=1") is None  # TLS: never spliced

    async with http_server(silent) as store:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(StorageError):  # not asked a second time through the pool
            await open_socket_reader(
                f"{store.url}/b/k?s=1", start=0, end=None, connect_timeout=2, read_timeout=0.3
            )
        assert 0.3 <= loop.time() - started < 2
        await store.wait_closed()


async def test_cancelled_while_waiting_for_the_head_closes_its_socket() -> None:
    async with http_server(silent) as store:
        task = asyncio.create_task(open_reader(f"{store.url}/b/k?s=1"))
        async with asyncio.timeout(2):
            while not store.heads:  # the request went out; the answer never comes
                await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await store.wait_closed()
