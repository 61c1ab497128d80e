"""Storage interface: keys come from ``new_key``, never a client; data moves in chunks."""

from __future__ import annotations

import datetime as dt
import re
import secrets
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol

import structlog

from echora_server.core.errors import DependencyError
from echora_server.core.tasks import OwnedTasks

log = structlog.get_logger("echora.storage")


class StorageError(DependencyError):
    code = "storage_unavailable"
    public_message = "File storage is unavailable; try again shortly."


class ObjectNotFound(StorageError):
    """The key does not exist."""


class ObjectTooLarge(Exception):
    """Raised by a chunk source to stop a write; the backend leaves nothing behind."""


class InvalidRange(ValueError):
    """``open`` was asked for a range that starts past the end of the object (416)."""


DEFAULT_CHUNK_SIZE = 256 * 1024

# Keys are server-generated (``new_key``), so a strict pattern costs nothing and is the
# first wall of the local path jail: no dots (so no ``..``), no leading or doubled ``/``.
_KEY_RE = re.compile(r"[A-Za-z0-9_-]+(?:/[A-Za-z0-9_-]+)*")
_PREFIX_RE = re.compile(r"(?:[A-Za-z0-9_-]+/)*[A-Za-z0-9_-]*")


def check_key(key: str) -> str:
    if not isinstance(key, str) or len(key) > 512 or not _KEY_RE.fullmatch(key):
        raise ValueError(f"invalid storage key: {key!r}")
    return key


def check_prefix(prefix: str) -> str:
    if not isinstance(prefix, str) or len(prefix) > 512 or not _PREFIX_RE.fullmatch(prefix):
        raise ValueError(f"invalid storage key prefix: {prefix!r}")
    return prefix


def check_range(start: int, end: int | None) -> None:
    if start < 0 or (end is not None and end < start):
        raise ValueError(f"invalid range: {start}-{end}")


@dataclass(frozen=True, slots=True)
class StoredObject:
    key: str
    size: int


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int
    last_modified: dt.datetime


@dataclass(frozen=True, slots=True)
class PendingUpload:
    key: str
    upload_id: str
    initiated: dt.datetime


@dataclass(frozen=True, slots=True)
class PresignedPost:
    """A form a client sends straight to the store: ``fields`` first, then the file."""

    url: str
    fields: dict[str, str]


@dataclass(frozen=True, slots=True)
class PresignedPut:
    """A PUT a client sends straight to the store: the body alone, with ``headers``."""

    url: str
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class Leftover:
    """What a failed write could not clean up (the store was down): ``key``'s object, if it
    may exist, and ``upload_id``'s pending upload, if any. A later cleanup pass removes both."""

    key: str
    upload_id: str | None


# How long a failure counts as "the store is down" (for refusing uploads before their body)
# when nothing has succeeded since; then a request may try again.
KNOWN_DOWN_SECONDS = 10.0


class Availability:
    """The store's last answer: known to be down after a failure, until a call succeeds or
    KNOWN_DOWN_SECONDS pass. An answer that says "no such key" is a success."""

    def __init__(self) -> None:
        self._failed_at: float | None = None

    def succeeded(self) -> None:
        self._failed_at = None

    def failed(self) -> None:
        self._failed_at = time.monotonic()

    @property
    def known_down(self) -> bool:
        failed_at = self._failed_at
        return failed_at is not None and time.monotonic() - failed_at < KNOWN_DOWN_SECONDS


# Records a leftover durably; given to the storage by the layer that owns the database.
LeftoverSink = Callable[[Leftover], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class FileRegion:
    file: BinaryIO
    offset: int
    count: int


@dataclass(frozen=True, slots=True)
class SocketBody:
    sock: socket.socket
    count: int
    read_timeout: float


class ObjectReader(Protocol):
    """An open (possibly ranged) read. Always ``close()`` it, or use ``async with``."""

    size: int  # size of the whole object
    length: int  # bytes this reader yields

    def chunks(self, chunk_size: int = ...) -> AsyncIterator[bytes]: ...

    def file_region(self) -> FileRegion | None:
        """The open file holding the bytes (local disk), for sendfile; else None."""

    def socket_body(self) -> SocketBody | None:
        """The body still on the reader's own socket (S3 ``zero_copy``), before any chunk."""

    async def close(self) -> None: ...

    async def __aenter__(self) -> ObjectReader: ...

    async def __aexit__(self, *exc: object) -> None: ...


class Storage(Protocol):
    name: str
    leftovers: LeftoverSink | None
    availability: Availability
    # Why ``presign_post`` offers nothing (None: it offers forms), known after ``start``.
    direct_upload_problem: str | None
    # Where forms and PUTs go (scheme://host[:port]): what a page's content policy must let
    # it connect to. None while the store takes neither.
    direct_upload_origin: str | None
    # Why ``presign_put`` offers nothing (None: it offers PUTs), known after ``start``.
    direct_put_problem: str | None

    async def start(self) -> None:
        """Open clients; create the bucket/directory if configured to."""

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise StorageError when the store is unreachable (used by /readyz)."""

    async def put_stream(
        self,
        key: str,
        chunks: AsyncIterator[bytes],
        *,
        content_type: str,
        sha256: Callable[[], bytes] | None = None,
    ) -> StoredObject:
        """Stream ``chunks`` into ``key``; any failure or cancellation leaves nothing behind.
        ``sha256``: the digest of all chunks, asked once they are exhausted, for a store that
        verifies what it receives (else computed, if needed)."""

    async def open(
        self, key: str, start: int = 0, end: int | None = None, *, zero_copy: bool = False
    ) -> ObjectReader:
        """Bytes ``start..end`` inclusive as in HTTP (``end`` clamped; a ``start`` past the end
        raises InvalidRange, except ``(0, None)``). ``zero_copy``: caller uses ``socket_body``."""

    async def stat(self, key: str) -> ObjectInfo | None: ...

    async def presign_post(
        self, key: str, *, content_type: str, size: int, expires_in: int
    ) -> PresignedPost | None:
        """A form for exactly ``size`` bytes of ``content_type`` into ``key``; None when this
        store takes no direct uploads."""

    async def presign_put(
        self, key: str, *, content_type: str, sha256: bytes, expires_in: int
    ) -> PresignedPut | None:
        """A PUT of exactly the bytes whose SHA-256 is ``sha256`` into ``key``, the store
        refusing any other; None when this store takes no such uploads."""

    async def stored_sha256(self, key: str) -> bytes | None:
        """The SHA-256 the store verified when ``key`` was written by a ``presign_put`` URL;
        None when it keeps none."""

    async def accepts_pages_from(self, origin: str, method: str = "POST") -> bool:
        """Whether a web page of ``origin`` may send those forms (``method`` "POST") or PUTs
        ("PUT"): the store's CORS rules let it send them and read the answer (asked of the
        store, the answer kept a few minutes)."""

    async def copy(self, source: str, target: str) -> None:
        """A copy of ``source``'s object at ``target``, made by the store itself (no bytes
        through this process on S3); ObjectNotFound when ``source`` has none."""

    async def delete(self, key: str) -> None:
        """Idempotent: deleting a missing key succeeds."""

    def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        """Every stored object whose key starts with ``prefix`` (never temp files)."""

    def list_pending_uploads(self) -> AsyncIterator[PendingUpload]:
        """Incomplete multipart uploads under our prefix (none on local disk)."""

    async def abort_pending_upload(self, upload: PendingUpload) -> None:
        """Idempotent: aborting an upload that is already gone succeeds."""


async def clean_up(tasks: OwnedTasks, cleanup: Coroutine[Any, Any, None]) -> None:
    """Finish ``cleanup`` even if its write is cancelled; a failure is logged, never raised."""
    await tasks.run(_logged(cleanup))


async def _logged(cleanup: Coroutine[Any, Any, None]) -> None:
    try:
        await cleanup
    except Exception:
        log.exception("storage_cleanup_failed")


def new_key(kind: str, workspace_id: int, now: dt.datetime | None = None) -> str:
    now = now or dt.datetime.now(dt.UTC)
    return f"{kind}/{workspace_id}/{now:%Y/%m}/{secrets.token_urlsafe(24)}"
