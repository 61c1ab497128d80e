"""Downloads: authorise afresh (current memberships, no cache), then serve one stored object.

Every refusal is the same NotFound, before the file's size, ETag or name is looked at. The
reader is closed on every path, a disconnect included, so no S3 connection is leaked."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg
import structlog
from aiohttp import hdrs, web

from echora_server.auth.identity import Identity
from echora_server.core.errors import ApiError, NotFound
from echora_server.db import attachments
from echora_server.db.records import Attachment
from echora_server.files import transfer as bodies
from echora_server.files.filenames import split_extension
from echora_server.files.httpfields import (
    ByteRange,
    UnsatisfiableRange,
    content_disposition,
    if_range_allows,
    none_match,
    parse_range,
)
from echora_server.files.images import THUMBNAIL_TYPE
from echora_server.files.mediatypes import OCTET_STREAM, TEXT_PLAIN, disposition, served_type
from echora_server.storage.base import (
    InvalidRange,
    ObjectNotFound,
    ObjectReader,
    Storage,
    StorageError,
)

log = structlog.get_logger("echora.downloads")

# An id's bytes never change. ``private``: no shared cache may keep them (a removed member
# still has what their own browser cached).
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
    """The attachment if the caller may read it now; else NotFound, whatever the reason."""
    found = None
    if _ATTACHMENT_ID.fullmatch(attachment_id):
        async with pool.acquire() as conn:
            found = await attachments.select_attachment_for_reader(
                conn, attachment_id, identity.user.id
            )
    return _mine_to_read(identity, found)


async def fetched_attachment(
    pool: asyncpg.Pool, identity: Identity, attachment_id: str
) -> tuple[Attachment, list[int]]:
    """As ``readable_attachment`` when the bytes are about to be sent: a bot's live inbox
    entries carrying the file are stamped fetched the first time, in the same statement;
    their ids come back."""
    found = None
    if _ATTACHMENT_ID.fullmatch(attachment_id):
        async with pool.acquire() as conn:
            found = await attachments.select_attachment_for_fetch(
                conn, attachment_id, identity.user.id
            )
    attachment = _mine_to_read(identity, found[0] if found else None)
    return attachment, found[1] if found else []


def _mine_to_read(identity: Identity, found: Attachment | None) -> Attachment:
    if found is None or not identity.may_use_workspace(found.workspace_id):
        raise NotFound(FILE_NOT_FOUND)
    return found


def original(attachment: Attachment) -> Representation:
    """Inline only by DETECTED type; an attachment gets a type no browser renders or runs."""
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


def _headers(rep: Representation, size: int, byte_range: ByteRange | None) -> dict[str, str]:
    headers = {
        **_validators(rep),
        hdrs.CONTENT_TYPE: rep.content_type,
        hdrs.CONTENT_DISPOSITION: rep.content_disposition,
        hdrs.X_CONTENT_TYPE_OPTIONS: "nosniff",
        hdrs.CONTENT_SECURITY_POLICY: SANDBOX_CSP,
        hdrs.ACCEPT_RANGES: "bytes" if rep.ranges else "none",
    }
    if byte_range is not None:
        headers[hdrs.CONTENT_RANGE] = byte_range.content_range(size)
    return headers


async def _size(storage: Storage, rep: Representation) -> int:
    if rep.size is not None:
        return rep.size
    info = await storage.stat(rep.key)
    if info is None:
        raise NotFound(FILE_NOT_FOUND)
    return info.size


async def serve(
    request: web.Request,
    storage: Storage,
    rep: Representation,
    on_body: Callable[[], None] | None = None,
) -> web.StreamResponse:
    """Answer a GET or HEAD for ``rep`` (already authorised). ``on_body``: told when the
    bytes are about to be sent (a 200 or 206 to a GET, the object open)."""
    if none_match(request.headers.get(hdrs.IF_NONE_MATCH), rep.etag):
        return await bodies.start_response(request, 304, _validators(rep), None)
    byte_range = None
    if rep.size is not None and if_range_allows(request.headers.get(hdrs.IF_RANGE), rep.etag):
        try:
            byte_range = parse_range(request.headers.get(hdrs.RANGE), rep.size)
        except UnsatisfiableRange:
            raise RangeNotSatisfiable(headers={hdrs.CONTENT_RANGE: f"bytes */{rep.size}"}) from None
    status = 200 if byte_range is None else 206
    if request.method == hdrs.METH_HEAD:
        size = await _size(storage, rep)
        length = size if byte_range is None else byte_range.length
        return await bodies.start_response(request, status, _headers(rep, size, byte_range), length)
    expected = rep.size if byte_range is None else byte_range.length  # None: a thumbnail, small
    zero_copy = expected is not None and bodies.may_splice(request, expected)
    reader = await _open(storage, rep, byte_range, zero_copy=zero_copy)
    try:
        headers = _headers(rep, reader.size, byte_range)
        if on_body is not None:
            on_body()
        return await bodies.send(request, rep.attachment_id, reader, status, headers)
    finally:
        # Shielded: a second cancellation must not leave the file or S3 connection open.
        await asyncio.shield(reader.close())


async def _open(
    storage: Storage, rep: Representation, byte_range: ByteRange | None, *, zero_copy: bool
) -> ObjectReader:
    start, end = (0, None) if byte_range is None else (byte_range.start, byte_range.end)
    try:
        reader = await storage.open(rep.key, start, end, zero_copy=zero_copy)
    except ObjectNotFound:
        # Deleted since the row was read, or a dangling row (the sweeper's business).
        log.warning("download_object_missing", attachment_id=rep.attachment_id)
        raise NotFound(FILE_NOT_FOUND) from None
    except InvalidRange as exc:  # the object is shorter than its row says
        raise StorageError(f"stored object shorter than its row: {exc}") from exc
    if rep.size is not None and reader.size != rep.size:
        await reader.close()
        raise StorageError(f"stored object has {reader.size} bytes, its row {rep.size}")
    return reader
