"""Local-disk storage: the interface mapped onto the directory tree at ``config.files_dir``."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import os
import re
import secrets
import shutil
import stat
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TypeVar

from echora_server.core.tasks import OwnedTasks
from echora_server.storage.base import (
    Availability,
    InvalidRange,
    Leftover,
    LeftoverSink,
    ObjectInfo,
    ObjectNotFound,
    PendingUpload,
    PresignedPost,
    PresignedPut,
    StorageError,
    StoredObject,
    check_key,
    check_prefix,
    check_range,
    clean_up,
)
from echora_server.storage.local.paths import jailed_path, modified_at, scan_directory
from echora_server.storage.local.reader import LocalFileReader, open_file_reader
from echora_server.storage.local.tempfile import (
    TEMP_DIR,
    WRITE_BATCH,
    TempFile,
    remove_stale_temp_files,
)

_T = TypeVar("_T")


# Temp files are named by TempFile.in_dir; only such a name is ever removed as a leftover.
_TEMP_NAME = re.compile(r"[0-9a-f]{32}\.part")


class LocalStorage:
    name = "local"

    def __init__(self, root: Path, *, timeout: float = 20.0) -> None:
        """``timeout``: how long a call may wait for the disk (a hung NFS mount, say) before
        it fails; the blocked thread itself cannot be stopped and finishes when it can."""
        self._root = Path(root)
        self._real_root: Path | None = None
        self._cleanups = OwnedTasks()
        self._timeout = timeout
        self.leftovers: LeftoverSink | None = None
        self.availability = Availability()

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

        if not await self._translate(check):
            raise StorageError(f"{self._root} is not a writable directory")

    @property
    def _started_root(self) -> Path:
        if self._real_root is None:
            raise RuntimeError("LocalStorage.start() was not awaited")
        return self._real_root

    def _path(self, key: str) -> Path:
        return jailed_path(self._started_root, key)

    async def put_stream(
        self,
        key: str,
        chunks: AsyncIterator[bytes],
        *,
        content_type: str,
        sha256: Callable[[], bytes] | None = None,  # a local file has nobody to prove it to
    ) -> StoredObject:
        check_key(key)
        temp = TempFile.in_dir(self._started_root / TEMP_DIR)
        try:
            size = await temp.write_stream(chunks)
            # The jail's check in the thread that writes the last bytes: one hop, not two.
            await temp.commit(functools.partial(self._path, key))
        except BaseException:
            await clean_up(self._cleanups, self._discard(key, temp))
            raise
        return StoredObject(key=key, size=size)

    async def _discard(self, key: str, temp: TempFile) -> None:
        try:
            await temp.discard()
        except OSError:
            if self.leftovers is not None:
                await self.leftovers(Leftover(key, temp.path.name))
            raise

    async def open(
        self, key: str, start: int = 0, end: int | None = None, *, zero_copy: bool = False
    ) -> LocalFileReader:
        check_key(key)
        check_range(start, end)
        try:
            async with asyncio.timeout(self._timeout):
                reader = await open_file_reader(functools.partial(self._path, key), key, start, end)
        except TimeoutError:
            self.availability.failed()
            raise StorageError(f"local open: no answer within {self._timeout:g} s") from None
        except (ObjectNotFound, InvalidRange):
            self.availability.succeeded()
            raise
        except StorageError:
            self.availability.failed()
            raise
        self.availability.succeeded()
        return reader

    direct_upload_problem: str | None = "the local store takes no direct uploads"
    direct_upload_origin: str | None = None
    direct_put_problem: str | None = "the local store takes no direct uploads"

    async def presign_post(
        self, key: str, *, content_type: str, size: int, expires_in: int
    ) -> PresignedPost | None:
        return None  # the bytes come through Echora

    async def presign_put(
        self, key: str, *, content_type: str, sha256: bytes, expires_in: int
    ) -> PresignedPut | None:
        return None

    async def stored_sha256(self, key: str) -> bytes | None:
        return None

    async def accepts_pages_from(self, origin: str, method: str = "POST") -> bool:
        return False

    async def stat(self, key: str) -> ObjectInfo | None:
        check_key(key)

        def stat_sync() -> ObjectInfo | None:
            try:
                st = self._path(key).stat()
            except (FileNotFoundError, NotADirectoryError):
                return None
            if not stat.S_ISREG(st.st_mode):
                return None
            return ObjectInfo(key=key, size=st.st_size, last_modified=modified_at(st))

        return await self._translate(stat_sync)

    async def copy(self, source: str, target: str) -> None:
        check_key(source)
        check_key(target)

        def copy_sync() -> None:
            temp = self._started_root / TEMP_DIR / f"{secrets.token_hex(16)}.part"
            try:
                with open(self._path(source), "rb") as src, open(temp, "xb") as dst:
                    shutil.copyfileobj(src, dst, WRITE_BATCH)
                    os.fsync(dst.fileno())
                destination = self._path(target)
                destination.parent.mkdir(parents=True, exist_ok=True)
                os.replace(temp, destination)
            except FileNotFoundError:
                raise ObjectNotFound(source) from None
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temp)

        await self._translate(copy_sync)

    async def delete(self, key: str) -> None:
        check_key(key)

        def delete_sync() -> None:
            # Idempotent; a directory is not an object either.
            with contextlib.suppress(FileNotFoundError, NotADirectoryError, IsADirectoryError):
                self._path(key).unlink()

        await self._translate(delete_sync)

    async def _translate(self, fn: Callable[[], _T]) -> _T:
        try:
            async with asyncio.timeout(self._timeout):
                result = await asyncio.to_thread(fn)
        except TimeoutError:
            self.availability.failed()
            raise StorageError(f"local storage: no answer within {self._timeout:g} s") from None
        except OSError as exc:
            self.availability.failed()
            raise StorageError(f"local storage failed: {exc.strerror or exc}") from exc
        self.availability.succeeded()
        return result

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        check_prefix(prefix)
        root = self._started_root
        pending = [prefix.rpartition("/")[0]]  # the deepest directory the prefix names
        while pending:
            rel_dir = pending.pop()
            entries = await self._translate(functools.partial(scan_directory, root, rel_dir))
            subdirs = []
            for rel, st in entries:
                if st is None:
                    if rel.startswith(prefix) or prefix.startswith(f"{rel}/"):
                        subdirs.append(rel)
                elif rel.startswith(prefix):
                    yield ObjectInfo(key=rel, size=st.st_size, last_modified=modified_at(st))
            pending.extend(reversed(subdirs))

    async def list_pending_uploads(self) -> AsyncIterator[PendingUpload]:
        # Nothing to abort: stale temp files go by ``sweep_temp``.
        return
        yield

    async def abort_pending_upload(self, upload: PendingUpload) -> None:
        """Removes the temp file a failed write left (``upload_id`` names it)."""
        if not _TEMP_NAME.fullmatch(upload.upload_id):
            raise ValueError(f"not a temp file name: {upload.upload_id!r}")
        path = self._root / TEMP_DIR / upload.upload_id
        await self._translate(functools.partial(path.unlink, missing_ok=True))

    async def sweep_temp(self, older_than: dt.datetime) -> int:
        sweep = functools.partial(
            remove_stale_temp_files, self._root / TEMP_DIR, older_than.timestamp()
        )
        return await self._translate(sweep)
