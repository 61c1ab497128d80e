"""Reading one local file (or a range of it) as a stream of chunks."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import BinaryIO

from echora_server.storage.base import (
    DEFAULT_CHUNK_SIZE,
    FileRegion,
    InvalidRange,
    ObjectNotFound,
    StorageError,
)
from echora_server.storage.local.worker import ThreadWorker


class LocalFileReader:
    def __init__(self, file: BinaryIO, size: int, start: int, length: int) -> None:
        self.size = size
        self.length = length
        self._start = start
        self._file = file
        self._worker = ThreadWorker()
        self._closed = False

    async def chunks(self, chunk_size: int = DEFAULT_CHUNK_SIZE) -> AsyncIterator[bytes]:
        remaining = self.length
        while remaining > 0:
            try:
                data = await self._worker.run(self._file.read, min(chunk_size, remaining))
            except OSError as exc:
                raise StorageError(f"local read failed: {exc.strerror}") from exc
            if not data:  # the file was truncated under us
                raise StorageError("local object is shorter than expected")
            remaining -= len(data)
            yield data

    def file_region(self) -> FileRegion:
        return FileRegion(self._file, self._start, self.length)

    def socket_body(self) -> None:
        return None  # the bytes are in a file (see file_region)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._worker.settle()
        await asyncio.to_thread(self._file.close)

    async def __aenter__(self) -> LocalFileReader:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def open_file_reader(
    locate: Callable[[], Path], key: str, start: int, end: int | None
) -> LocalFileReader:
    """``locate`` runs in the thread too (the jail touches disk); a cancellation leaks no file."""
    task = asyncio.ensure_future(asyncio.to_thread(_open_range, locate, key, start, end))
    try:
        file, size, length = await asyncio.shield(task)
    except asyncio.CancelledError:
        task.add_done_callback(_close_if_opened)
        raise
    return LocalFileReader(file, size, start, length)


def _open_range(
    locate: Callable[[], Path], key: str, start: int, end: int | None
) -> tuple[BinaryIO, int, int]:
    path = locate()
    try:
        file = path.open("rb")
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        raise ObjectNotFound(key) from None
    except OSError as exc:
        raise StorageError(f"local open failed: {exc.strerror}") from exc
    try:
        size = os.fstat(file.fileno()).st_size
        if (start, end) != (0, None) and start >= size:
            raise InvalidRange(f"range starts at {start}, object has {size} bytes")
        last = size - 1 if end is None else min(end, size - 1)
        file.seek(start)
    except BaseException:
        file.close()
        raise
    return file, size, max(0, last - start + 1)


def _close_if_opened(task: asyncio.Future[tuple[BinaryIO, int, int]]) -> None:
    if not task.cancelled() and task.exception() is None:
        task.result()[0].close()
