"""One S3 object from chunks, all or nothing: PutObject below one part (on the lean path),
else multipart with a part in flight while the next fills; a failure aborts and deletes,
shielded and retried."""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import io
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import structlog
from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import Payload
from botocore.exceptions import ClientError

from echora_server.core.tasks import OwnedTasks
from echora_server.storage.base import (
    Availability,
    Leftover,
    LeftoverSink,
    StorageError,
    clean_up,
)
from echora_server.storage.s3.errors import (
    S3_ERRORS,
    bounded,
    error_code,
    is_transient,
    may_have_been_written,
)
from echora_server.storage.s3.lean import LeanS3

log = structlog.get_logger("echora.storage")

A = TypeVar("A")
B = TypeVar("B")

# Retries of a failed write's cleanup (the store may be briefly away), within CLEANUP_SECONDS
# so the client's answer waits little; what is left then is recorded for a cleanup pass.
CLEANUP_DELAYS = (0.0, 0.25, 0.5, 1.0, 2.0)
CLEANUP_SECONDS = 5.0


class PartSplitter:
    """Parts of exactly ``size`` bytes (the last shorter) as views of the chunks: no copies."""

    def __init__(self, source: AsyncIterator[bytes], size: int) -> None:
        self._source = source
        self._size = size
        self._rest = memoryview(b"")
        self._exhausted = False

    @property
    def drained(self) -> bool:
        return self._exhausted and not self._rest

    async def next(self) -> PartBody:
        pieces: list[memoryview] = []
        filled = 0
        chunk = self._rest
        while True:
            take = min(len(chunk), self._size - filled)
            if take:
                pieces.append(chunk[:take])
                filled += take
            self._rest = chunk[take:]
            if filled == self._size or self._exhausted:
                return PartBody(pieces)
            try:
                chunk = memoryview(await anext(self._source))
            except StopAsyncIteration:
                self._exhausted = True
                return PartBody(pieces)


class PartBody(Payload):
    """A part never joined (``bytes`` would cost a copy, and aiohttp another): botocore reads it
    as a file to sign it (``seek(0)`` before a retry), aiohttp sends it piece by piece."""

    _autoclose = True  # nothing to release: the pieces are dropped with the object

    def __init__(self, pieces: list[memoryview]) -> None:
        super().__init__(pieces)
        self._pieces = pieces
        self._starts = list(itertools.accumulate((len(piece) for piece in pieces), initial=0))
        self._length = self._starts[-1]
        self._size = self._length  # what aiohttp sends as Content-Length
        self._pos = 0

    def __len__(self) -> int:
        return self._length

    def read(self, size: int = -1, /) -> bytes | memoryview:
        """At most ``size`` bytes, never across two pieces (a short read, as a raw file gives)."""
        if self._pos >= self._length:
            return b""
        index = bisect.bisect_right(self._starts, self._pos) - 1
        offset = self._pos - self._starts[index]
        if size < 0:
            self._pos = self._length
            return b"".join([self._pieces[index][offset:], *self._pieces[index + 1 :]])
        piece = self._pieces[index][offset : offset + size]
        self._pos += len(piece)
        return piece

    def seek(self, offset: int, whence: int = io.SEEK_SET, /) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._length}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def sha256(self) -> bytes:
        digest = hashlib.sha256()
        for piece in self._pieces:
            digest.update(piece)
        return digest.digest()

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return b"".join(self._pieces).decode(encoding, errors)

    async def write(self, writer: AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        # Always the whole part from its start: a retried request sends it again.
        left = self._length if content_length is None else min(self._length, content_length)
        for piece in self._pieces:
            if left <= 0:
                break
            await writer.write(piece[:left])
            left -= len(piece)


async def _no_more_parts() -> PartBody:
    return PartBody([])


async def _both(first: Awaitable[A], second: Awaitable[B]) -> tuple[A, B]:
    """A failure or our cancellation first stops the other; the first error wins."""
    tasks = (asyncio.ensure_future(first), asyncio.ensure_future(second))
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for task in tasks:
            task.cancel()  # a no-op for a finished task
        # Shielded from our own cancellation: return only once both have stopped.
        await asyncio.shield(asyncio.gather(*tasks, return_exceptions=True))
    for task in tasks:
        failure = None if task.cancelled() else task.exception()
        if failure is not None:
            raise failure
    return tasks[0].result(), tasks[1].result()


async def abort_upload(client: Any, bucket: str, s3_key: str, upload_id: str) -> None:
    try:
        await client.abort_multipart_upload(Bucket=bucket, Key=s3_key, UploadId=upload_id)
    except ClientError as exc:
        if error_code(exc) not in ("NoSuchUpload", "404"):
            raise


class S3Uploader:
    """Cleanups of failed writes run in ``cleanups``, drained before the client closes; each
    call to the store has ``timeout`` s, retries included."""

    def __init__(
        self,
        client: Any,
        lean: LeanS3,
        bucket: str,
        part_size: int,
        cleanups: OwnedTasks,
        *,
        timeout: float,
        availability: Availability,
        leftovers: LeftoverSink | None,
    ) -> None:
        self._client = client
        self._lean = lean
        self._bucket = bucket
        self._part_size = part_size
        self._cleanups = cleanups
        self._timeout = timeout
        self._availability = availability
        self._leftovers = leftovers

    async def upload(
        self,
        key: str,
        s3_key: str,
        chunks: AsyncIterator[bytes],
        *,
        content_type: str,
        sha256: Callable[[], bytes] | None = None,
    ) -> int:
        """``key`` is the logical key (for leftovers), ``s3_key`` the prefixed one; ``sha256``
        gives the digest of all chunks once they are exhausted."""
        parts = PartSplitter(aiter(chunks), self._part_size)
        part = await parts.next()
        if parts.drained:  # smaller than one part: a single PutObject
            digest = sha256() if sha256 is not None else part.sha256()
            await self._put_single(key, s3_key, part, content_type, digest)
            return len(part)
        upload_id: str | None = None
        completing = False
        total = 0
        # Shielded: cancelled while the store creates the upload, we must still learn its
        # id to abort it. Until then the cleanup waits for this task instead.
        creating = asyncio.ensure_future(self._create(s3_key, content_type))
        try:
            upload_id = await asyncio.shield(creating)
            done: list[dict[str, Any]] = []
            while part:
                number = len(done) + 1
                sending = self._upload_part(s3_key, upload_id, number, part)
                # The next part fills while this one is sent: the client's bytes keep flowing.
                filling = parts.next() if not parts.drained else _no_more_parts()
                etag, following = await _both(sending, filling)
                done.append({"PartNumber": number, "ETag": etag})
                total += len(part)
                part = following
            completing = True
            await self._complete(s3_key, upload_id, done, total)
        except BaseException as exc:
            written = completing and may_have_been_written(exc)
            cleanup = self._clean_up_failed_write(key, s3_key, upload_id, written, creating)
            await clean_up(self._cleanups, cleanup)
            raise
        return total

    async def _upload_part(self, s3_key: str, upload_id: str, number: int, part: PartBody) -> str:
        async with bounded("UploadPart", self._timeout, self._availability):
            uploaded = await self._client.upload_part(
                Bucket=self._bucket,
                Key=s3_key,
                UploadId=upload_id,
                PartNumber=number,
                Body=part,
            )
        return str(uploaded["ETag"])

    async def _create(self, s3_key: str, content_type: str) -> str:
        async with bounded("CreateMultipartUpload", self._timeout, self._availability):
            created = await self._client.create_multipart_upload(
                Bucket=self._bucket, Key=s3_key, ContentType=content_type
            )
        return str(created["UploadId"])

    async def _put_single(
        self, key: str, s3_key: str, data: PartBody, content_type: str, sha256: bytes
    ) -> None:
        try:
            async with bounded("PutObject", self._timeout, self._availability):
                # No Expect: 100-continue (one round trip); the digest is the upload's own.
                await self._lean.put(s3_key, data, content_type, sha256)
        except BaseException as exc:
            if may_have_been_written(exc):  # a timeout or cancellation may follow a stored object
                cleanup = self._clean_up_failed_write(key, s3_key, None, maybe_written=True)
                await clean_up(self._cleanups, cleanup)
            raise

    async def _complete(
        self, s3_key: str, upload_id: str, parts: list[dict[str, Any]], total: int
    ) -> None:
        async with bounded("CompleteMultipartUpload", self._timeout, self._availability):
            await self._client.complete_multipart_upload(
                Bucket=self._bucket,
                Key=s3_key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        # A Complete can answer 200 with an error inside; trust only the stored size.
        async with bounded("HeadObject", self._timeout, self._availability):
            head = await self._client.head_object(Bucket=self._bucket, Key=s3_key)
        if head["ContentLength"] != total:
            raise StorageError(f"S3 stored {head['ContentLength']} bytes, sent {total}")

    async def _clean_up_failed_write(
        self,
        key: str,
        s3_key: str,
        upload_id: str | None,
        maybe_written: bool,
        creating: asyncio.Future[str] | None = None,
    ) -> None:
        if upload_id is None and creating is not None:
            try:
                upload_id = await creating  # the store may have created it all the same
            except Exception:
                upload_id = None  # not created
        last: BaseException | None = None
        try:
            async with asyncio.timeout(min(CLEANUP_SECONDS, self._timeout)):
                for delay in CLEANUP_DELAYS:
                    await asyncio.sleep(delay)
                    try:
                        if upload_id is not None:
                            await abort_upload(self._client, self._bucket, s3_key, upload_id)
                            upload_id = None
                        if maybe_written:
                            await self._client.delete_object(Bucket=self._bucket, Key=s3_key)
                            maybe_written = False
                        return
                    except S3_ERRORS as exc:
                        last = exc
                        if not is_transient(exc):  # e.g. access denied: retrying will not help
                            break
        except TimeoutError as exc:
            last = exc
        log.warning("s3_cleanup_failed", key=s3_key, error=repr(last), left_for="cleanup pass")
        if self._leftovers is not None:
            await self._leftovers(Leftover(key, upload_id))
