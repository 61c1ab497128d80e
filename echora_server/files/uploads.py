"""The upload pipeline's app-wide service: limits, the tasks it owns, and cleanup.

An upload streams each file into storage as it arrives (``echora_server/upload_meter.py``:
counted, hashed, cut off at the limits), then inserts the rows of every file of the
request in one transaction, all or nothing (``echora_server/upload_batch.py``). The
``Uploader`` here outlives requests: it owns the commits and cleanups a cancelled handler
must not interrupt (shutdown waits for them) and deletes objects no row will claim; a
delete that fails is queued in ``storage_deletions`` for the sweeper.

No database connection is held while client bytes or storage are awaited: one is taken
briefly to authorise the target, and one for the final insert.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
from aiohttp import web

from echora_server.db import attachments
from echora_server.files.images import Thumbnailer
from echora_server.files.meter import HEAD_BYTES
from echora_server.files.upload_batch import (
    FILES_KIND,
    THUMBNAIL_SUFFIX,
    FileTooLarge,
    InTransaction,
    TooManyFiles,
    UploadBatch,
    UploadTarget,
)
from echora_server.keys import CONFIG, POOL, STORAGE, UPLOADER
from echora_server.storage.base import Storage

# The upload pipeline's public names, importable from here wherever they are defined.
__all__ = [
    "FILES_KIND",
    "HEAD_BYTES",
    "THUMBNAIL_SUFFIX",
    "FileTooLarge",
    "InTransaction",
    "TooManyFiles",
    "UploadBatch",
    "UploadLimits",
    "UploadTarget",
    "Uploader",
    "uploads_ctx",
]

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class UploadLimits:
    max_bytes: int
    max_files: int
    idle_timeout: float
    # Whole request, first file byte to commit. The sweeper relies on it: an object
    # older than this (plus slack) whose row is missing will never get one.
    max_seconds: float


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
