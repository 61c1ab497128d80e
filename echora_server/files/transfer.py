"""How a download's body reaches the client's socket, the cheapest way the reader
allows: a local file by sendfile, an S3 socket of its own by splice, anything else in
chunks, the first read before the headers so an outage still answers 503. After the
headers a failure aborts the connection (a short body, never a wrong one) and is logged.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing

import structlog
from aiohttp import web

from echora_server.storage import splice
from echora_server.storage.base import FileRegion, ObjectReader, SocketBody, StorageError

log = structlog.get_logger("echora.downloads")

# A read returns what is buffered; a large size makes per-chunk overhead negligible.
CHUNK_SIZE = 1024 * 1024
# Below this, a pooled connection's saved handshake is worth more than a splice.
SPLICE_MIN_BYTES = 1024 * 1024


async def start_response(
    request: web.Request, status: int, headers: dict[str, str], length: int | None
) -> web.StreamResponse:
    """Send the status line and headers (with ``Content-Length`` when given)."""
    response = web.StreamResponse(status=status, headers=headers)
    if length is not None:
        response.content_length = length
    await response.prepare(request)
    return response


def may_splice(request: web.Request, length: int) -> bool:
    """Whether a body of ``length`` bytes may come from a socket by splice: big enough
    for a store connection of its own to pay, and written to a plain TCP socket (not
    TLS)."""
    transport = request.transport
    return (
        splice.AVAILABLE
        and length >= SPLICE_MIN_BYTES
        and transport is not None
        and transport.get_extra_info("socket") is not None
        and transport.get_extra_info("ssl_object") is None
    )


async def send(
    request: web.Request,
    attachment_id: str,
    reader: ObjectReader,
    status: int,
    headers: dict[str, str],
) -> web.StreamResponse:
    """Answer with ``status``, ``headers`` and the reader's bytes (``attachment_id`` is
    for logs). The caller still owns, and closes, the reader."""
    region = reader.file_region()
    if region is not None:
        return await _send_file(request, attachment_id, region, status, headers)
    body = reader.socket_body()
    if body is not None:
        return await _splice(request, attachment_id, body, status, headers)
    chunks: AsyncIterator[bytes] = reader.chunks(CHUNK_SIZE)
    # Every backend's chunks() is an async generator; the Protocol only says iterator.
    async with aclosing(chunks):  # type: ignore[type-var]
        # Before the headers: a storage failure here still becomes a clean 503.
        first = await anext(chunks, b"")
        response = await start_response(request, status, headers, reader.length)
        try:
            if first:
                await response.write(first)
            async for chunk in chunks:
                await response.write(chunk)
        except StorageError:
            _cut_short(request, attachment_id)
        except ConnectionError:
            pass  # the client left; aiohttp notes it when it finishes the response
    return response


def _cut_short(request: web.Request, attachment_id: str) -> None:
    """Called in an ``except`` block after the headers went out: the status can no longer
    change, so log the failure and abort; only a short body (then the cut) tells the
    client, who never gets a wrong one."""
    log.exception("download_aborted", attachment_id=attachment_id)
    if request.transport is not None:
        request.transport.abort()


async def _splice(
    request: web.Request,
    attachment_id: str,
    body: SocketBody,
    status: int,
    headers: dict[str, str],
) -> web.StreamResponse:
    """The store's socket goes to the client's in the kernel (splice): the bytes never
    enter Python. The store has already answered its status, so this is past the point
    of a clean 503, as a failed read after the first chunk is."""
    response = await start_response(request, status, headers, body.count)
    transport = request.transport
    if transport is None or transport.is_closing():
        return response  # the client left
    request.writer.send_headers()  # into the transport now, not with a first write
    target = transport.get_extra_info("socket")
    try:
        await _flushed(request, transport)
        moved = await splice.splice(
            body.sock, target.fileno(), body.count, read_timeout=body.read_timeout
        )
        if moved != body.count:
            raise StorageError(f"S3 body ended after {moved} of {body.count} bytes")
    except ConnectionError:
        transport.abort()  # the client left (perhaps unnoticed by aiohttp yet)
        return response
    except (OSError, StorageError, splice.SourceError):
        _cut_short(request, attachment_id)
        return response
    await response.write_eof()
    return response


async def _flushed(request: web.Request, transport: asyncio.Transport) -> None:
    """Wait until the transport has handed all it holds (these headers, the tail of a
    response before them on a pipelined connection) to the kernel: bytes spliced into
    the socket now would overtake anything still queued in Python."""
    if not transport.get_write_buffer_size():
        return
    low, high = transport.get_write_buffer_limits()
    transport.set_write_buffer_limits(high=0)  # the writer stays paused until it is empty
    try:
        await request.writer.drain()
    finally:
        transport.set_write_buffer_limits(high=high, low=low)


async def _send_file(
    request: web.Request,
    attachment_id: str,
    region: FileRegion,
    status: int,
    headers: dict[str, str],
) -> web.StreamResponse:
    """A local file goes from the page cache to the socket in the kernel (sendfile):
    no read into Python, no thread hop per chunk. The reader still owns the file."""
    response = await start_response(request, status, headers, region.count)
    transport = request.transport
    if transport is None or transport.is_closing():
        return response  # the client left
    try:
        if region.count:  # sendfile wants a positive count; an empty file has none
            loop = asyncio.get_running_loop()
            sent = await loop.sendfile(transport, region.file, region.offset, region.count)
            if sent != region.count:  # the file shrank under us
                raise StorageError(f"local file ended after {sent} of {region.count} bytes")
    except ConnectionError:
        transport.abort()  # the client left (perhaps unnoticed by aiohttp yet)
        return response
    except (OSError, StorageError):
        _cut_short(request, attachment_id)
        return response
    await response.write_eof()
    return response
