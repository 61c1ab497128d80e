"""Local-disk storage rooted at ``config.files_dir``.

Writes go to a temp file under ``<root>/.tmp`` (same filesystem), are fsynced and then
``os.replace``d into place, so a reader never sees a partial object. Every blocking
call runs in a worker thread; a cancelled await never abandons a thread that still
touches a file we are about to close or unlink (see ``_Worker``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import os
import secrets
import stat
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from echora_server.storage.base import (
    DEFAULT_CHUNK_SIZE,
    InvalidRange,
    ObjectInfo,
    ObjectNotFound,
    PendingUpload,
    ShieldedCleanups,
    StorageError,
    StoredObject,
    check_key,
    check_prefix,
    check_range,
)

TEMP_DIR = ".tmp"
# Small chunks from a socket are coalesced so a write costs one thread hop per MiB.
_WRITE_BATCH = 1024 * 1024
_T = TypeVar("_T")


class _Worker:
    """Runs one blocking call at a time in a thread and remembers the one in flight.

    Cancelling ``run`` does not stop the thread; ``settle`` waits for it, so cleanup
    never races a write or read that is still running."""

    def __init__(self) -> None:
        self._inflight: asyncio.Future[Any] | None = None

    async def run(self, fn: Callable[..., _T], *args: Any) -> _T:
        task: asyncio.Future[_T] = asyncio.ensure_future(asyncio.to_thread(fn, *args))
        self._inflight = task
        return await asyncio.shield(task)

    async def settle(self) -> None:
        task = self._inflight
        if task is not None:
            await asyncio.wait([task])
            if not task.cancelled():
                task.exception()  # mark retrieved: the caller already saw it or left


class _FileReader:
    """An open, ranged read of one file."""

    def __init__(self, file: BinaryIO, size: int, length: int) -> None:
        self.size = size
        self.length = length
        self._file = file
        self._worker = _Worker()
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

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._worker.settle()
        await asyncio.to_thread(self._file.close)

    async def __aenter__(self) -> _FileReader:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class _TempFile:
    """The temp file behind one ``put_stream``; created lazily by the first write."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: BinaryIO | None = None
        self._worker = _Worker()
        # Set once the object is in place: a cancellation that lands after the commit
        # (the thread finishes it regardless) must still leave nothing behind.
        self._committed: Path | None = None

    async def write(self, data: bytes | bytearray) -> None:
        await self._translated(self._write_sync, data)

    async def commit(self, target: Path) -> None:
        await self._translated(self._commit_sync, target)

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

    def _commit_sync(self, target: Path) -> None:
        if self._file is None:  # an empty object
            self._write_sync(b"")
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


def _mtime(st: os.stat_result) -> dt.datetime:
    return dt.datetime.fromtimestamp(st.st_mtime, dt.UTC)


def _close_if_opened(task: asyncio.Future[tuple[BinaryIO, int, int]]) -> None:
    if not task.cancelled() and task.exception() is None:
        task.result()[0].close()


class LocalStorage:
    name = "local"

    def __init__(self, root: Path) -> None:
        self._root = Path(root)
        self._real_root: Path | None = None
        self._cleanups = ShieldedCleanups()

    @property
    def root(self) -> Path:
        return self._root

    async def start(self) -> None:
        def prepare() -> Path:
            (self._root / TEMP_DIR).mkdir(parents=True, exist_ok=True)
            return self._root.resolve(strict=True)

        self._real_root = await asyncio.to_thread(prepare)

    async def close(self) -> None:
        await self._cleanups.drain()

    async def ping(self) -> None:
        def check() -> bool:
            temp = self._root / TEMP_DIR
            return temp.is_dir() and os.access(self._root, os.W_OK) and os.access(temp, os.W_OK)

        if not await asyncio.to_thread(check):
            raise StorageError(f"{self._root} is not a writable directory")

    def _path(self, key: str) -> Path:
        """The file for ``key``; the path jail. Call in a worker thread (it touches disk)."""
        if self._real_root is None:
            raise RuntimeError("LocalStorage.start() was not awaited")
        path = self._real_root / check_key(key)
        # The key pattern already forbids "..": this catches symlinks leading out.
        if not Path(os.path.realpath(path)).is_relative_to(self._real_root):
            raise ValueError(f"storage key escapes the root: {key!r}")
        return path

    async def put_stream(
        self, key: str, chunks: AsyncIterator[bytes], *, content_type: str
    ) -> StoredObject:
        check_key(key)
        target = await asyncio.to_thread(self._path, key)
        assert self._real_root is not None
        temp = _TempFile(self._real_root / TEMP_DIR / f"{secrets.token_hex(16)}.part")
        size = 0
        try:
            batch = bytearray()
            async for chunk in chunks:
                batch += chunk
                size += len(chunk)
                if len(batch) >= _WRITE_BATCH:
                    await temp.write(batch)
                    batch = bytearray()
            if batch:
                await temp.write(batch)
            await temp.commit(target)
        except BaseException:
            await self._cleanups.run(temp.discard())
            raise
        return StoredObject(key=key, size=size)

    async def open(self, key: str, start: int = 0, end: int | None = None) -> _FileReader:
        check_key(key)
        check_range(start, end)
        task = asyncio.ensure_future(asyncio.to_thread(self._open_sync, key, start, end))
        try:
            file, size, length = await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(_close_if_opened)
            raise
        return _FileReader(file, size, length)

    def _open_sync(self, key: str, start: int, end: int | None) -> tuple[BinaryIO, int, int]:
        path = self._path(key)
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

    async def stat(self, key: str) -> ObjectInfo | None:
        check_key(key)

        def stat_sync() -> ObjectInfo | None:
            try:
                st = self._path(key).stat()
            except (FileNotFoundError, NotADirectoryError):
                return None
            if not stat.S_ISREG(st.st_mode):
                return None
            return ObjectInfo(key=key, size=st.st_size, last_modified=_mtime(st))

        return await self._translate(stat_sync)

    async def delete(self, key: str) -> None:
        check_key(key)

        def delete_sync() -> None:
            # Idempotent; a directory is not an object either.
            with contextlib.suppress(FileNotFoundError, NotADirectoryError, IsADirectoryError):
                self._path(key).unlink()

        await self._translate(delete_sync)

    async def _translate(self, fn: Callable[[], _T]) -> _T:
        try:
            return await asyncio.to_thread(fn)
        except OSError as exc:
            raise StorageError(f"local storage failed: {exc.strerror or exc}") from exc

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        check_prefix(prefix)
        if self._real_root is None:
            raise RuntimeError("LocalStorage.start() was not awaited")
        root = self._real_root
        pending = [prefix.rpartition("/")[0]]  # the deepest directory the prefix names
        while pending:
            rel_dir = pending.pop()
            entries = await self._translate(functools.partial(_scan, root, rel_dir))
            subdirs = []
            for rel, st in entries:
                if st is None:
                    if rel.startswith(prefix) or prefix.startswith(f"{rel}/"):
                        subdirs.append(rel)
                elif rel.startswith(prefix):
                    yield ObjectInfo(key=rel, size=st.st_size, last_modified=_mtime(st))
            pending.extend(reversed(subdirs))

    async def list_pending_uploads(self) -> AsyncIterator[PendingUpload]:
        # Local writes have no server-side state to abort; stale temp files are swept
        # with ``sweep_temp``.
        return
        yield

    async def abort_pending_upload(self, upload: PendingUpload) -> None:
        return None

    async def sweep_temp(self, older_than: dt.datetime) -> int:
        """Delete temp files last written before ``older_than`` (left by a crash or a
        killed process). Returns how many were removed."""
        limit = older_than.timestamp()

        def sweep() -> int:
            removed = 0
            with os.scandir(self._root / TEMP_DIR) as entries:
                for entry in entries:
                    if entry.is_file(follow_symlinks=False) and (
                        entry.stat(follow_symlinks=False).st_mtime < limit
                    ):
                        Path(entry.path).unlink(missing_ok=True)
                        removed += 1
            return removed

        return await self._translate(sweep)


def _scan(root: Path, rel_dir: str) -> list[tuple[str, os.stat_result | None]]:
    """One directory of the tree, sorted: (key, stat), stat None for a subdirectory.
    Skips the temp dir, symlinks and names that could not be keys, so nothing outside
    the key space is ever listed."""
    found: list[tuple[str, os.stat_result | None]] = []
    directory = root / rel_dir if rel_dir else root
    if os.path.realpath(directory) != str(directory):
        return found  # a symlink on the way (list("link/")): outside the jail
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
                try:
                    check_key(rel)
                except ValueError:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    found.append((rel, None))
                elif entry.is_file(follow_symlinks=False):
                    found.append((rel, entry.stat(follow_symlinks=False)))
    except (FileNotFoundError, NotADirectoryError):
        pass
    found.sort(key=lambda item: item[0])
    return found
