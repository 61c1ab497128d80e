"""One local object, all or nothing: a temp file in ``<root>/.tmp`` is fsynced and ``os.replace``d
into place, so no reader sees a partial object; a failure removes it (and the placed object)."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, BinaryIO

from echora_server.storage.base import StorageError
from echora_server.storage.local.worker import ThreadWorker

TEMP_DIR = ".tmp"
# Small chunks from a socket are coalesced so a write costs one thread hop per MiB.
WRITE_BATCH = 1024 * 1024


class TempFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: BinaryIO | None = None
        self._tail = bytearray()  # written by commit
        self._worker = ThreadWorker()
        # Set once the object is in place: a cancellation that lands after the commit
        # (the thread finishes it regardless) must still leave nothing behind.
        self._committed: Path | None = None

    @classmethod
    def in_dir(cls, temp_dir: Path) -> TempFile:
        return cls(temp_dir / f"{secrets.token_hex(16)}.part")

    async def write_stream(self, chunks: AsyncIterator[bytes]) -> int:
        """Full batches are written on the way; the last one is kept for ``commit``, so a
        small object costs one thread hop in all."""
        size = 0
        batch = bytearray()
        async for chunk in chunks:
            batch += chunk
            size += len(chunk)
            if len(batch) >= WRITE_BATCH:
                await self._translated(self._write_sync, batch)
                batch = bytearray()
        self._tail = batch
        return size

    async def commit(self, locate: Callable[[], Path]) -> None:
        """Write what is left, fsync, and move into place at ``locate()`` (called in the
        thread: it touches the disk)."""
        tail, self._tail = self._tail, bytearray()
        await self._translated(self._commit_sync, tail, locate)

    async def discard(self) -> None:
        await self._worker.settle()
        await asyncio.to_thread(self._discard_sync)

    async def _translated(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            await self._worker.run(fn, *args)
        except OSError as exc:
            raise StorageError(f"local write failed: {exc.strerror or exc}") from exc

    def _write_sync(self, data: bytes | bytearray) -> None:
        if self._file is None:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            self._file = os.fdopen(fd, "wb")
        self._file.write(data)

    def _commit_sync(self, tail: bytearray, locate: Callable[[], Path]) -> None:
        target = locate()
        if tail or self._file is None:  # an empty object still gets its file
            self._write_sync(tail)
        assert self._file is not None
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.path, target)
        self._committed = target
        _fsync_dir(target.parent)  # on failure, discard() removes the target again

    def _discard_sync(self) -> None:
        if self._file is not None:
            self._file.close()
        self.path.unlink(missing_ok=True)
        if self._committed is not None:
            self._committed.unlink(missing_ok=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_stale_temp_files(temp_dir: Path, older_than: float) -> int:
    """Delete a crash's temp files written before ``older_than``; how many. Blocking."""
    removed = 0
    with os.scandir(temp_dir) as entries:
        for entry in entries:
            try:
                stale = entry.is_file(follow_symlinks=False) and (
                    entry.stat(follow_symlinks=False).st_mtime < older_than
                )
            except FileNotFoundError:
                continue  # an upload just moved it into place (or discarded it)
            if stale:
                Path(entry.path).unlink(missing_ok=True)
                removed += 1
    return removed
