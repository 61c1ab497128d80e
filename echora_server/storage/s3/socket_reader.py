"""GetObject on a socket of our own, whose body ``storage.splice`` can move (aiohttp's would be
read into Python): a presigned GET on a fresh connection, its head read exactly so the body
stays in the kernel. Only the plain, strictly parsed success asked for is taken; anything else
returns None and the caller asks through aiobotocore, whose retries decide what the client gets."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

from multidict import CIMultiDict

from echora_server.storage.base import DEFAULT_CHUNK_SIZE, SocketBody, StorageError
from echora_server.storage.splice import wait_readable

MAX_HEAD = 64 * 1024  # S3 response headers are a few hundred bytes
_DIGITS = re.compile(r"[0-9]{1,19}")
_CONTENT_RANGE = re.compile(r"bytes ([0-9]{1,19})-([0-9]{1,19})/([0-9]{1,19})")
_FIELD_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an RFC 9110 token


class S3SocketReader:
    def __init__(self, sock: socket.socket, size: int, length: int, read_timeout: float) -> None:
        self.size = size
        self.length = length
        self._sock = sock
        self._read_timeout = read_timeout
        self._reading = False

    def socket_body(self) -> SocketBody:
        """Valid only before ``chunks`` read anything."""
        if self._reading:
            raise RuntimeError("socket_body() after chunks() started reading")
        return SocketBody(self._sock, self.length, self._read_timeout)

    def file_region(self) -> None:
        return None

    async def chunks(self, chunk_size: int = DEFAULT_CHUNK_SIZE) -> AsyncIterator[bytes]:
        self._reading = True
        loop = asyncio.get_running_loop()
        left = self.length
        while left:
            try:
                async with asyncio.timeout(self._read_timeout):
                    chunk = await loop.sock_recv(self._sock, min(chunk_size, left))
            except (OSError, TimeoutError) as exc:
                raise StorageError(f"S3 body: {exc!r}") from exc
            if not chunk:
                got = self.length - left
                raise StorageError(f"S3 body ended after {got} of {self.length} bytes")
            left -= len(chunk)
            yield chunk

    async def close(self) -> None:
        self._sock.close()

    async def __aenter__(self) -> S3SocketReader:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def open_socket_reader(
    url: str,
    *,
    start: int,
    end: int | None,
    connect_timeout: float,
    read_timeout: float,
) -> S3SocketReader | None:
    """A reader or None; a store that connects but stays silent raises StorageError, no fallback."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        return None
    ranged = (start, end) != (0, None)
    host = parts.netloc.rpartition("@")[2]  # what was signed, without any user info
    lines = [f"GET {parts.path}?{parts.query} HTTP/1.1", f"Host: {host}"]
    if ranged:
        lines.append(f"Range: bytes={start}-{'' if end is None else end}")
    lines += ["Connection: close", "", ""]
    try:
        async with asyncio.timeout(connect_timeout):
            sock = await _connect(parts.hostname, parts.port or 80)
    except (OSError, TimeoutError):
        return None  # the pooled read retries, then says what is wrong
    reader = None
    try:
        async with asyncio.timeout(read_timeout):
            await asyncio.get_running_loop().sock_sendall(sock, "\r\n".join(lines).encode())
            head = await _read_head(sock)
        reader = _reader(sock, head, start if ranged else None, read_timeout)
    except TimeoutError:
        raise StorageError(f"S3 GetObject: no answer in {read_timeout:g} s") from None
    except (OSError, ValueError):
        pass
    finally:
        if reader is None:  # also when cancelled
            sock.close()
    return reader


async def _connect(host: str, port: int) -> socket.socket:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await loop.sock_connect(sock, address)
    except BaseException:
        sock.close()
        raise
    return sock


async def _read_head(sock: socket.socket) -> bytes:
    head = b""
    while True:
        await wait_readable(sock)
        peeked = sock.recv(MAX_HEAD, socket.MSG_PEEK)
        if not peeked:
            raise ValueError("connection closed in the response head")
        end = (head + peeked).find(b"\r\n\r\n")
        # Consume the head's bytes only (all of what was peeked when the end is not in it).
        want = len(peeked) if end < 0 else end + 4 - len(head)
        while want:
            got = sock.recv(want)
            head += got
            want -= len(got)
        if end >= 0:
            return head
        if len(head) > MAX_HEAD:
            raise ValueError("response head too long")


def _reader(
    sock: socket.socket, head: bytes, start: int | None, read_timeout: float
) -> S3SocketReader | None:
    status_line, *field_lines = head.decode("latin-1").split("\r\n")
    version, _, rest = status_line.partition(" ")
    if version != "HTTP/1.1" or rest[:4] != ("200 " if start is None else "206 "):
        return None
    fields: CIMultiDict[str] = CIMultiDict()
    for line in field_lines:
        if line:
            name, colon, value = line.partition(":")
            # No folded lines, no space before the colon: only a strict head is taken.
            if not colon or not _FIELD_NAME.fullmatch(name):
                return None
            fields.add(name, value.strip(" \t"))
    lengths = fields.getall("Content-Length", [])
    if len(lengths) != 1 or not _DIGITS.fullmatch(lengths[0]) or "Transfer-Encoding" in fields:
        return None
    if fields.getall("Content-Encoding", ["identity"]) != ["identity"]:
        return None
    length = int(lengths[0])
    size = length
    if start is not None:
        ranges = fields.getall("Content-Range", [])
        match = _CONTENT_RANGE.fullmatch(ranges[0]) if len(ranges) == 1 else None
        if match is None or int(match[1]) != start or int(match[2]) - start + 1 != length:
            return None
        size = int(match[3])
    return S3SocketReader(sock, size, length, read_timeout)
