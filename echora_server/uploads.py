"""The upload pipeline: client bytes stream into storage, rows follow, all or nothing.

For each file: the first bytes are read (and counted) to detect the type and refuse a
mismatch before anything is stored; then every byte streams straight into
``Storage.put_stream`` through a generator that counts (``ObjectTooLarge`` past the
limit: the backend leaves nothing behind), hashes and forwards. Images get dimensions
from their header and a thumbnail stored beside them.

All or nothing, per request: the rows of every file are inserted in ONE transaction
after every object is stored. Until that commits, the batch owns the objects it stored
and deletes them on any failure: a later file refused, the client gone, the handler
cancelled, storage or the database down. Cleanups and the commit run as tasks the app
owns (``Uploader.run_owned``): a cancelled handler cannot interrupt them, and shutdown
waits for them. A delete that fails is queued in ``storage_deletions`` for the sweeper.

No database connection is held while client bytes or storage are awaited: one is taken
briefly to authorise the target, and one for the final insert.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

import asyncpg
from aiohttp import web

from echora_server.auth.access import CHANNEL_NOT_FOUND, WORKSPACE_NOT_FOUND
from echora_server.db import attachments
from echora_server.db.attachments import NewAttachment
from echora_server.db.records import Attachment
from echora_server.errors import ApiError, InvalidRequest, NotFound
from echora_server.filenames import sanitize_filename
from echora_server.images import THUMBNAIL_TYPE, Thumbnailer, decodable, read_dimensions
from echora_server.keys import CONFIG, POOL, STORAGE, UPLOADER
from echora_server.mediatypes import classify, served_type
from echora_server.storage.base import ObjectTooLarge, Storage, StorageError, new_key
from echora_server.upload_bodies import ChunkReader, IncomingFile, UploadTimeout

log = logging.getLogger(__name__)
T = TypeVar("T")
# Work done in the transaction that inserts a batch's rows, given those rows.
InTransaction = Callable[[asyncpg.Connection, list[Attachment]], Awaitable[T]]

FILES_KIND = "files"
THUMBNAIL_SUFFIX = "-thumb"
# Bytes looked at before storing: type detection needs 8 KiB, image headers (a JPEG's
# EXIF block comes before its size) usually fit in 64 KiB.
HEAD_BYTES = 64 * 1024


class FileTooLarge(ApiError):
    status = 413
    code = "file_too_large"
    message = "A file is larger than the upload limit."


class TooManyFiles(ApiError):
    status = 413
    code = "too_many_files"
    message = "Too many files in one upload."


@dataclass(frozen=True, slots=True)
class UploadLimits:
    max_bytes: int
    max_files: int
    idle_timeout: float
    # Whole request, first file byte to commit. The sweeper relies on it: an object
    # older than this (plus slack) whose row is missing will never get one.
    max_seconds: float


@dataclass(frozen=True, slots=True)
class UploadTarget:
    workspace_id: int
    channel_id: int | None  # set: the files may only be linked into this channel


class _Meter:
    """Counts, hashes and forwards one file's chunks, stopping at the size limit."""

    def __init__(self, reader: ChunkReader, limits: UploadLimits, deadline: float) -> None:
        self._reader = reader
        self._limit = limits.max_bytes
        self._max_seconds = limits.max_seconds
        self._deadline = deadline  # event loop time
        self._sha256 = hashlib.sha256()
        self._head: list[bytes] = []
        self._ended = False
        self.size = 0

    async def _next(self) -> bytes:
        if self._ended:
            return b""
        if asyncio.get_running_loop().time() > self._deadline:
            raise UploadTimeout(
                "The upload took longer than the server allows.",
                details={"max_upload_seconds": self._max_seconds},
            )
        chunk = await self._reader.read()
        if not chunk:
            self._ended = True
            return b""
        self.size += len(chunk)
        if self.size > self._limit:  # stop reading here: nothing past the cap is asked for
            raise ObjectTooLarge(f"over {self._limit} bytes")
        self._sha256.update(chunk)
        return chunk

    async def read_head(self) -> bytes:
        """At least HEAD_BYTES (or the whole file if smaller), kept to be stored first."""
        buffered = 0
        while buffered < HEAD_BYTES and (chunk := await self._next()):
            self._head.append(chunk)
            buffered += len(chunk)
        return b"".join(self._head)

    async def chunks(self) -> AsyncIterator[bytes]:
        head, self._head = self._head, []
        for chunk in head:
            yield chunk
        while chunk := await self._next():
            yield chunk

    @property
    def sha256(self) -> bytes:
        return self._sha256.digest()


async def _single(data: bytes) -> AsyncIterator[bytes]:
    yield data


class Uploader:
    """The app's upload service: limits, thumbnails, and the tasks it owns."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        storage: Storage,
        limits: UploadLimits,
        thumbnailer: Thumbnailer,
    ) -> None:
        self.pool = pool
        self.storage = storage
        self.limits = limits
        self.thumbnailer = thumbnailer
        self._tasks: set[asyncio.Task[Any]] = set()

    def batch(self, target: UploadTarget, uploader_id: int) -> UploadBatch:
        return UploadBatch(self, target, uploader_id)

    async def run_owned(self, work: Coroutine[Any, Any, T]) -> T:
        """Run ``work`` to its end even if the caller is cancelled (shutdown waits)."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._forget)
        return await asyncio.shield(task)

    def _forget(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a caller that left has nobody to tell

    async def drain(self) -> None:
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def discard(self, keys: list[str]) -> None:
        """Delete stored objects no row will claim; queue what storage refuses now."""
        results = await asyncio.gather(
            *(self.storage.delete(key) for key in keys), return_exceptions=True
        )
        failed = [key for key, result in zip(keys, results, strict=True) if result is not None]
        if not failed:
            return
        log.warning("upload cleanup: %d objects not deleted, queued for the sweeper", len(failed))
        try:
            async with self.pool.acquire() as conn:
                await attachments.insert_storage_deletions(conn, failed)
        except Exception:
            log.exception("upload cleanup: queueing failed; the orphan sweep will find %s", failed)


class UploadBatch:
    """The files of one request: ``add`` each, then ``commit``; leaving the ``async
    with`` block any other way deletes what was stored."""

    def __init__(self, uploader: Uploader, target: UploadTarget, uploader_id: int) -> None:
        self._uploader = uploader
        self._target = target
        self._uploader_id = uploader_id
        self._files: list[NewAttachment] = []
        self._keys: list[str] = []  # every object stored so far, thumbnails included
        self._settled = False  # the commit task (or a discard) owns the objects now
        self._deadline = asyncio.get_running_loop().time() + uploader.limits.max_seconds

    async def __aenter__(self) -> UploadBatch:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None and not self._settled and self._keys:
            self._settled = True
            await self._uploader.run_owned(self._uploader.discard(list(self._keys)))

    async def add(self, incoming: IncomingFile) -> None:
        """Stream one file into storage (and its thumbnail, for images)."""
        limits, storage = self._uploader.limits, self._uploader.storage
        if len(self._files) >= limits.max_files:
            raise TooManyFiles(details={"limit_files": limits.max_files})
        filename = sanitize_filename(incoming.filename)
        meter = _Meter(incoming.reader, limits, self._deadline)
        key = new_key(FILES_KIND, self._target.workspace_id)
        try:
            head = await meter.read_head()
            media = classify(incoming.declared_type, filename, head)
            stored = await storage.put_stream(
                key, meter.chunks(), content_type=served_type(media.detected)
            )
        except ObjectTooLarge:
            raise FileTooLarge(
                details={"limit_bytes": limits.max_bytes, "filename": filename}
            ) from None
        self._keys.append(key)
        if stored.size != meter.size:
            raise StorageError(f"stored {stored.size} of {meter.size} bytes")
        size = read_dimensions(head, media.detected) if media.detected else None
        thumbnail_key = None
        if media.detected is not None and decodable(media.detected):
            thumbnail = await self._uploader.thumbnailer.make(
                storage, key, stored.size, media.detected
            )
            if thumbnail is not None:
                thumbnail_key = f"{key}{THUMBNAIL_SUFFIX}"
                await storage.put_stream(
                    thumbnail_key, _single(thumbnail.data), content_type=THUMBNAIL_TYPE
                )
                self._keys.append(thumbnail_key)
                size = size or (thumbnail.source_width, thumbnail.source_height)
        self._files.append(
            NewAttachment(
                id=secrets.token_urlsafe(16),
                storage_key=key,
                filename=filename,
                size=stored.size,
                declared_type=media.declared,
                detected_type=media.detected,
                sha256=meter.sha256,
                width=size[0] if size else None,
                height=size[1] if size else None,
                thumbnail_key=thumbnail_key,
            )
        )

    async def commit(self) -> list[Attachment]:
        """Insert every row in one transaction; on failure the objects are deleted."""
        if not self._files:
            raise InvalidRequest("Send at least one file.", code="no_files")
        self._settled = True
        work = self._commit_or_discard(_rows_only, recover=lambda found: found)
        return await self._uploader.run_owned(work)

    async def commit_with(self, work: InTransaction[T]) -> T:
        """Insert every row (there may be none), then run ``work`` in the same transaction:
        all of it commits, or nothing does and the objects are deleted (a one-shot message
        and its files, echora_server/message_uploads.py). A COMMIT that failed yet happened
        re-raises: the rows stand, and ``work``'s result is the caller's to find again."""
        self._settled = True
        return await self._uploader.run_owned(self._commit_or_discard(work, recover=None))

    async def _commit_or_discard(
        self,
        work: InTransaction[T],
        *,
        recover: Callable[[list[Attachment]], T] | None,
    ) -> T:
        pool, target = self._uploader.pool, self._target
        committing = False
        try:
            async with pool.acquire() as conn, conn.transaction():
                rows = await attachments.insert_attachments(
                    conn, target.workspace_id, self._uploader_id, target.channel_id, self._files
                )
                if len(rows) != len(self._files):  # membership lost during the upload
                    raise NotFound(CHANNEL_NOT_FOUND if target.channel_id else WORKSPACE_NOT_FOUND)
                result = await work(conn, rows)
                committing = True
            return result
        except BaseException:
            if committing:  # the COMMIT itself failed: it may have happened anyway
                found = await self._rows_if_committed()
                if found and recover is not None:
                    return recover(found)
                if found:
                    raise
                if found is None:  # unknowable now; deleting might leave dangling rows
                    log.warning("upload commit outcome unknown; the orphan sweep decides")
                    raise
            await self._uploader.discard(list(self._keys))
            raise

    async def _rows_if_committed(self) -> list[Attachment] | None:
        try:
            async with self._uploader.pool.acquire() as conn:
                return await attachments.select_attachments_by_ids(
                    conn, [f.id for f in self._files]
                )
        except Exception:
            return None


async def _rows_only(conn: asyncpg.Connection, rows: list[Attachment]) -> list[Attachment]:
    return rows


async def uploads_ctx(app: web.Application) -> AsyncIterator[None]:
    """The upload service; on shutdown, waits for its commits and cleanups to finish."""
    config = app[CONFIG]
    limits = UploadLimits(
        max_bytes=config.max_upload_bytes,
        max_files=config.max_files_per_upload,
        idle_timeout=config.upload_idle_timeout,
        max_seconds=config.max_upload_seconds,
    )
    uploader = Uploader(app[POOL], app[STORAGE], limits, Thumbnailer())
    app[UPLOADER] = uploader
    try:
        yield
    finally:
        await uploader.drain()
