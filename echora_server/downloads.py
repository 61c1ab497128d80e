"""The download pipeline: authorise afresh, answer from validators when possible, else
stream (part of) one stored object to the client.

Authorisation runs on every request against CURRENT memberships (no cache): a caller
who may not read an attachment, another tenant's attachment, a malformed id and a
missing one all raise the same NotFound, before anything about the file (size, ETag,
name) is looked at.

Then, in RFC 9110 order: ``If-None-Match`` (304, storage untouched); ``HEAD`` (headers
from the row, storage untouched); ``If-Range`` and ``Range`` (one range, 206, passed to
storage as a ranged read, or 416). The body streams in CHUNK_SIZE reads with
``Content-Length``; the first chunk is read before the headers go out, so a storage
outage still answers 503 ``storage_unavailable``. Two kernel-side paths replace the
chunks where they can: a local file (already open) goes to the socket by sendfile, and
an S3 read of at least SPLICE_MIN_BYTES to a plain TCP client is opened on a socket of
its own whose body is spliced across (``echora_server.splice``). After the headers a
failure can no longer change the status: the connection is aborted (the client sees a
short body, never a wrong one) and logged. The storage reader is closed in ``finally``
on every path, a client that disconnects included, so its S3 connection goes back to
the pool (or, its own, is closed).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass

import asyncpg
import structlog
from aiohttp import hdrs, web

from echora_server import splice
from echora_server.auth.identity import Identity
from echora_server.db import attachments
from echora_server.db.records import Attachment
from echora_server.errors import ApiError, NotFound
from echora_server.filenames import split_extension
from echora_server.httpfields import (
    ByteRange,
    UnsatisfiableRange,
    content_disposition,
    if_range_allows,
    none_match,
    parse_range,
)
from echora_server.images import THUMBNAIL_TYPE
from echora_server.keys import REQUEST_ID
from echora_server.mediatypes import OCTET_STREAM, TEXT_PLAIN, disposition, served_type
from echora_server.storage.base import (
    FileRegion,
    InvalidRange,
    ObjectNotFound,
    ObjectReader,
    SocketBody,
    Storage,
    StorageError,
)

log = structlog.get_logger("echora.downloads")

# Large enough that per-chunk overhead (a loop turn, a write and its drain) is
# negligible: in bench/files.py, 1 MiB reads took S3 downloads from about 0.6x to about
# 0.77x of a direct GetObject. An S3 read returns what is already buffered (aiohttp's
# flow control bounds that). Local files are not read here: they go by sendfile.
CHUNK_SIZE = 1024 * 1024
# Reads at least this long are offered a socket of their own to splice from (S3 over
# plain HTTP): below it, a pooled connection's saved handshake is worth more.
SPLICE_MIN_BYTES = 1024 * 1024
# Files never change under an id. ``private``: a shared cache must not keep them, since
# only the authorised may read them. (A removed member keeps what their browser cached.)
CACHE_CONTROL = "private, max-age=86400, immutable"
# Opened directly (not as a subresource), a file gets no script, plugin or origin.
SANDBOX_CSP = "sandbox; default-src 'none'"
FILE_NOT_FOUND = "File not found."
# The attachments.id format (sql/0003): anything else cannot exist, so no query for it.
_ATTACHMENT_ID = re.compile(r"[A-Za-z0-9_-]{22}")


class RangeNotSatisfiable(ApiError):
    status = 416
    code = "range_not_satisfiable"
    message = "The requested range is not satisfiable."


@dataclass(frozen=True, slots=True)
class Representation:
    """What one download URL serves."""

    attachment_id: str  # for logs
    key: str
    size: int | None  # None: only storage knows (thumbnails); then ranges are not offered
    etag: str  # strong, quoted
    content_type: str
    content_disposition: str

    @property
    def ranges(self) -> bool:
        return self.size is not None


async def readable_attachment(
    pool: asyncpg.Pool, identity: Identity, attachment_id: str
) -> Attachment:
    """The attachment if the caller may read it now; else NotFound, the same for every
    reason (no such id, another workspace, an unlinked upload of someone else, a private
    channel they are not in, a token limited to another workspace)."""
    found = None
    if _ATTACHMENT_ID.fullmatch(attachment_id):
        async with pool.acquire() as conn:
            found = await attachments.select_attachment_for_reader(
                conn, attachment_id, identity.user.id
            )
    if found is None or not identity.may_use_workspace(found.workspace_id):
        raise NotFound(FILE_NOT_FOUND)
    return found


def original(attachment: Attachment) -> Representation:
    """The uploaded file. Inline only for the allow-list, decided from the DETECTED type;
    an attachment gets a type no browser renders as a document or runs."""
    kind = disposition(attachment.detected_type, attachment.declared_type, attachment.filename)
    if kind == "inline":
        content_type = served_type(attachment.detected_type)
    elif attachment.detected_type == TEXT_PLAIN:
        content_type = served_type(TEXT_PLAIN)
    else:
        content_type = OCTET_STREAM
    return Representation(
        attachment_id=attachment.id,
        key=attachment.storage_key,
        size=attachment.size,
        etag=f'"{attachment.sha256.hex()}"',
        content_type=content_type,
        content_disposition=content_disposition(kind, attachment.filename),
    )


def thumbnail(attachment: Attachment) -> Representation:
    """The WebP preview made at upload (never changes either); NotFound when none."""
    if attachment.thumbnail_key is None:
        raise NotFound(FILE_NOT_FOUND)
    stem, _ = split_extension(attachment.filename)
    return Representation(
        attachment_id=attachment.id,
        key=attachment.thumbnail_key,
        size=None,
        etag=f'"{attachment.sha256.hex()}-thumb"',
        content_type=THUMBNAIL_TYPE,
        content_disposition=content_disposition("inline", f"{stem}-thumb.webp"),
    )


def _validators(rep: Representation) -> dict[str, str]:
    return {hdrs.ETAG: rep.etag, hdrs.CACHE_CONTROL: CACHE_CONTROL}


def _headers(rep: Representation, size: int, part: ByteRange | None) -> dict[str, str]:
    headers = {
        **_validators(rep),
        hdrs.CONTENT_TYPE: rep.content_type,
        hdrs.CONTENT_DISPOSITION: rep.content_disposition,
        hdrs.X_CONTENT_TYPE_OPTIONS: "nosniff",
        hdrs.CONTENT_SECURITY_POLICY: SANDBOX_CSP,
        hdrs.ACCEPT_RANGES: "bytes" if rep.ranges else "none",
    }
    if part is not None:
        headers[hdrs.CONTENT_RANGE] = part.content_range(size)
    return headers


async def _start(
    request: web.Request, status: int, headers: dict[str, str], length: int | None
) -> web.StreamResponse:
    response = web.StreamResponse(status=status, headers=headers)
    if length is not None:
        response.content_length = length
    # Prepared here, so the request-context middleware can no longer add the id itself.
    if REQUEST_ID in request:
        response.headers["X-Request-ID"] = request[REQUEST_ID]
    await response.prepare(request)
    return response


async def _size(storage: Storage, rep: Representation) -> int:
    """The representation's size without reading it (a HEAD of a thumbnail)."""
    if rep.size is not None:
        return rep.size
    info = await storage.stat(rep.key)
    if info is None:
        raise NotFound(FILE_NOT_FOUND)
    return info.size


async def serve(request: web.Request, storage: Storage, rep: Representation) -> web.StreamResponse:
    """Answer a GET or HEAD for ``rep`` (already authorised)."""
    if none_match(request.headers.get(hdrs.IF_NONE_MATCH), rep.etag):
        return await _start(request, 304, _validators(rep), None)
    part = None
    if rep.size is not None and if_range_allows(request.headers.get(hdrs.IF_RANGE), rep.etag):
        try:
            part = parse_range(request.headers.get(hdrs.RANGE), rep.size)
        except UnsatisfiableRange:
            raise RangeNotSatisfiable(headers={hdrs.CONTENT_RANGE: f"bytes */{rep.size}"}) from None
    status = 200 if part is None else 206
    if request.method == hdrs.METH_HEAD:
        size = await _size(storage, rep)
        length = size if part is None else part.length
        return await _start(request, status, _headers(rep, size, part), length)
    reader = await _open(storage, rep, part, zero_copy=_may_splice(request, rep, part))
    try:
        headers = _headers(rep, reader.size, part)
        return await _stream(request, rep, reader, status, headers)
    finally:
        # Shielded: a second cancellation must not leave the file or S3 connection open.
        await asyncio.shield(reader.close())


def _may_splice(request: web.Request, rep: Representation, part: ByteRange | None) -> bool:
    """Whether this response may take its body from a socket by splice: big enough for a
    store connection of its own to pay, and written to a plain TCP socket (not TLS)."""
    length = rep.size if part is None else part.length
    transport = request.transport
    return (
        splice.AVAILABLE
        and length is not None
        and length >= SPLICE_MIN_BYTES
        and transport is not None
        and transport.get_extra_info("socket") is not None
        and transport.get_extra_info("ssl_object") is None
    )


async def _open(
    storage: Storage, rep: Representation, part: ByteRange | None, *, zero_copy: bool
) -> ObjectReader:
    start, end = (0, None) if part is None else (part.start, part.end)
    try:
        reader = await storage.open(rep.key, start, end, zero_copy=zero_copy)
    except ObjectNotFound:
        # The row went away since it was read (its message deleted), or the object is
        # missing (a dangling row: the sweeper's business). Either way: not found.
        log.warning("download_object_missing", attachment_id=rep.attachment_id)
        raise NotFound(FILE_NOT_FOUND) from None
    except InvalidRange as exc:  # the object is shorter than its row says
        raise StorageError(f"stored object shorter than its row: {exc}") from exc
    if rep.size is not None and reader.size != rep.size:
        await reader.close()
        raise StorageError(f"stored object has {reader.size} bytes, its row {rep.size}")
    return reader


async def _stream(
    request: web.Request,
    rep: Representation,
    reader: ObjectReader,
    status: int,
    headers: dict[str, str],
) -> web.StreamResponse:
    region = reader.file_region()
    if region is not None:
        return await _send_file(request, rep, region, status, headers)
    body = reader.socket_body()
    if body is not None:
        return await _splice(request, rep, reader, body, status, headers)
    chunks: AsyncIterator[bytes] = reader.chunks(CHUNK_SIZE)
    # Every backend's chunks() is an async generator; the Protocol only says iterator.
    async with aclosing(chunks):  # type: ignore[type-var]
        # Before the headers: a storage failure here still becomes a clean 503.
        first = await anext(chunks, b"")
        response = await _start(request, status, headers, reader.length)
        await _write_chunks(request, rep, response, first, chunks)
    return response


async def _write_chunks(
    request: web.Request,
    rep: Representation,
    response: web.StreamResponse,
    first: bytes,
    chunks: AsyncIterator[bytes],
) -> None:
    try:
        if first:
            await response.write(first)
        async for chunk in chunks:
            await response.write(chunk)
    except StorageError:
        _cut_short(request, rep)
    except ConnectionError:
        pass  # the client left; aiohttp notes it when it finishes the response


def _cut_short(request: web.Request, rep: Representation) -> None:
    """Called in an ``except`` block after the headers went out: the status can no longer
    change, so log the failure and abort; only a short body (then the cut) tells the
    client, who never gets a wrong one."""
    log.exception("download_aborted", attachment_id=rep.attachment_id)
    if request.transport is not None:
        request.transport.abort()


async def _splice(
    request: web.Request,
    rep: Representation,
    reader: ObjectReader,
    body: SocketBody,
    status: int,
    headers: dict[str, str],
) -> web.StreamResponse:
    """The store's socket goes to the client's in the kernel (splice): the bytes never
    enter Python. The store has already answered its status, so this is past the point
    of a clean 503, as a failed read after the first chunk is."""
    response = await _start(request, status, headers, body.count)
    transport = request.transport
    if transport is None or transport.is_closing():
        return response  # the client left
    if not request.writer.output_size:
        # aiohttp kept the headers back for the first write: spliced bytes would
        # overtake them. (Not so in the aiohttp this runs on; read the body instead.)
        chunks: AsyncIterator[bytes] = reader.chunks(CHUNK_SIZE)
        async with aclosing(chunks):  # type: ignore[type-var]
            await _write_chunks(request, rep, response, b"", chunks)
        return response
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
        _cut_short(request, rep)
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
    rep: Representation,
    region: FileRegion,
    status: int,
    headers: dict[str, str],
) -> web.StreamResponse:
    """A local file goes from the page cache to the socket in the kernel (sendfile):
    no read into Python, no thread hop per chunk. The reader still owns the file."""
    response = await _start(request, status, headers, region.count)
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
        _cut_short(request, rep)
        return response
    await response.write_eof()
    return response
