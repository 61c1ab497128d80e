"""A download's body to the client's socket, the cheapest way the reader allows: sendfile,
splice, else chunks. After the headers a failure aborts the connection and is logged: the
client gets a short body, never a wrong one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing

import structlog
from aiohttp import web

from echora_server.core.metrics import METRICS
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
    response = web.StreamResponse(status=status, headers=headers)
    if length is not None:
        response.content_length = length
    await response.prepare(request)
    return response


def may_splice(request: web.Request, length: int) -> bool:
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
    """The caller still owns, and closes, the reader."""
    metrics = request.app[METRICS]
    region = reader.file_region()
    if region is not None:
        metrics.download_body("sendfile")
        return await _send_file(request, attachment_id, region, status, headers)
    body = reader.socket_body()
    if body is not None:
        metrics.download_body("splice")
        return await _splice(request, attachment_id, body, status, headers)
    metrics.download_body("chunks")
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
    """In an ``except`` block once the headers are out (the status cannot change): log, abort."""
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
    """Wait until the transport's buffer (these headers, a pipelined response before them) is
    in the kernel: bytes spliced into the socket would overtake anything still queued."""
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
