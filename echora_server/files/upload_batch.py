"""The files of one upload request, stored all or nothing.

Each file streams into storage as it arrives (``FileMeter``); images get dimensions
from their header and a thumbnail stored beside them. The rows of every file are
inserted in ONE transaction after every object is stored. Until that commits, the batch
owns the objects it stored and deletes them on any failure: a later file refused, the
client gone, the handler cancelled, storage or the database down. Cleanups and the
commit run as tasks the app owns (``Uploader.run_owned``): a cancelled handler cannot
interrupt them, and shutdown waits for them.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar

import asyncpg

from echora_server.auth.access import CHANNEL_NOT_FOUND, WORKSPACE_NOT_FOUND
from echora_server.core.errors import ApiError, InvalidRequest, NotFound
from echora_server.db import attachments
from echora_server.db.attachments import NewAttachment
from echora_server.db.records import Attachment
from echora_server.files.filenames import sanitize_filename
from echora_server.files.images import THUMBNAIL_TYPE, decodable, read_dimensions
from echora_server.files.mediatypes import classify, served_type
from echora_server.files.meter import FileMeter
from echora_server.files.upload_body import IncomingFile
from echora_server.storage.base import ObjectTooLarge, StorageError, new_key

if TYPE_CHECKING:  # the service creates batches; a batch only calls back into it
    from echora_server.files.uploads import Uploader

log = logging.getLogger(__name__)
T = TypeVar("T")
# Work done in the transaction that inserts a batch's rows, given those rows.
InTransaction = Callable[[asyncpg.Connection, list[Attachment]], Awaitable[T]]

FILES_KIND = "files"
THUMBNAIL_SUFFIX = "-thumb"


class FileTooLarge(ApiError):
    status = 413
    code = "file_too_large"
    message = "A file is larger than the upload limit."


class TooManyFiles(ApiError):
    status = 413
    code = "too_many_files"
    message = "Too many files in one upload."


@dataclass(frozen=True, slots=True)
class UploadTarget:
    workspace_id: int
    channel_id: int | None  # set: the files may only be linked into this channel


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
        meter = FileMeter(
            incoming.reader,
            max_bytes=limits.max_bytes,
            max_seconds=limits.max_seconds,
            deadline=self._deadline,
        )
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


async def _single(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _rows_only(conn: asyncpg.Connection, rows: list[Attachment]) -> list[Attachment]:
    return rows
