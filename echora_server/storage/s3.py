"""S3-compatible storage (AWS S3, MinIO, SeaweedFS, ...) through aiobotocore.

Uploads stream part by part: at most one part is buffered, and any failure or
cancellation aborts the multipart upload (shielded, retried), so a failed write leaves
no object and no pending upload. Every botocore/aiohttp error leaves this module as a
StorageError (ObjectNotFound, InvalidRange) so callers never see raw botocore types.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from echora_server.config import Config
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

log = logging.getLogger(__name__)

# Cleanup after a failed write: the store may be briefly unreachable. Whatever still
# fails after these attempts is left to the sweeper (list_pending_uploads / list).
CLEANUP_DELAYS = (0.0, 0.25, 0.5, 1.0, 2.0)
# Every open reader holds one pooled connection until closed (a slow client downloading
# a big file holds it for minutes), and aiohttp waits without limit for a free one: the
# pool must be far larger than the expected number of concurrent downloads.
DEFAULT_MAX_POOL_CONNECTIONS = 100
_NOT_FOUND = frozenset({"NoSuchKey", "404", "NotFound"})
_TRANSIENT = (BotoCoreError, aiohttp.ClientError, OSError)  # OSError covers TimeoutError


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _transient(exc: Exception) -> bool:
    """Worth retrying: the store was unreachable or said so (5xx, throttling)."""
    if not isinstance(exc, ClientError):
        return True
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return status >= 500 or _code(exc) in ("SlowDown", "RequestTimeout", "Throttling")


def _maybe_written(exc: BaseException) -> bool:
    """After a failed PutObject/Complete: could the object exist anyway? Not when the
    store refused the request (4xx); yes after a timeout, a cut or a cancellation."""
    cause = exc.__cause__ if isinstance(exc, StorageError) else None
    if isinstance(cause, ClientError):
        return bool(cause.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) >= 500)
    return True


def _translate(exc: Exception, action: str, key: str | None) -> StorageError | InvalidRange:
    if isinstance(exc, ClientError):
        code = _code(exc)
        if key is not None and code in _NOT_FOUND:
            return ObjectNotFound(key)
        if code == "InvalidRange":
            return InvalidRange(f"range not satisfiable for {key!r}")
        return StorageError(f"S3 {action} failed: {code or 'unknown error'}")
    return StorageError(f"S3 {action} failed: {type(exc).__name__}: {exc}")


@contextlib.contextmanager
def _translated(action: str, key: str | None = None) -> Iterator[None]:
    """Turn S3 errors into ours; ``key`` given means a 404 is ObjectNotFound."""
    try:
        yield
    except (ClientError, *_TRANSIENT) as exc:
        raise _translate(exc, action, key) from exc


class _S3Reader:
    """A streaming GetObject body; ``close`` always releases the HTTP connection."""

    def __init__(self, response: aiohttp.ClientResponse, size: int, length: int) -> None:
        self.size = size
        self.length = length
        self._response = response

    async def chunks(self, chunk_size: int = DEFAULT_CHUNK_SIZE) -> AsyncIterator[bytes]:
        # aiohttp's iter_chunked, not aiobotocore's iter_chunks (1 KiB reads by default).
        received = 0
        with _translated("GetObject body"):
            async for chunk in self._response.content.iter_chunked(chunk_size):
                received += len(chunk)
                yield chunk
        if received != self.length:
            raise StorageError(f"S3 body ended after {received} of {self.length} bytes")

    async def close(self) -> None:
        # A fully read body already returned its connection to the pool; an unfinished
        # one must drop the connection (it still has unread bytes on the wire).
        self._response.close()

    async def __aenter__(self) -> _S3Reader:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class _PartReader:
    """Cuts a chunk source into parts of exactly ``size`` bytes (the last may be
    shorter). It holds only the part being filled and the unread rest of one chunk."""

    def __init__(self, source: AsyncIterator[bytes], size: int) -> None:
        self._source = source
        self._size = size
        self._rest = memoryview(b"")
        self._exhausted = False

    @property
    def drained(self) -> bool:
        return self._exhausted and not self._rest

    async def next(self) -> bytearray:
        """The next part; empty once the source is drained."""
        part = bytearray(self._rest[: self._size])
        self._rest = self._rest[self._size :]
        while len(part) < self._size and not self._exhausted:
            try:
                chunk = memoryview(await anext(self._source))
            except StopAsyncIteration:
                self._exhausted = True
                break
            need = self._size - len(part)
            part += chunk[:need]
            self._rest = chunk[need:]
        return part


class _PartBody(io.RawIOBase):
    """A seekable file over one part, read in place.

    Passing ``bytes`` would make botocore wrap them in a BytesIO, and aiohttp then
    copies that whole (``BytesIO.getbuffer`` unshares): two parts in memory, not one."""

    def __init__(self, data: bytearray) -> None:
        super().__init__()
        self._data = data
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int = -1, /) -> bytes:
        end = len(self._data) if size < 0 else min(len(self._data), self._pos + size)
        with memoryview(self._data) as view:
            data = bytes(view[self._pos : end])
        self._pos = max(self._pos, end)
        return data

    def seek(self, offset: int, whence: int = io.SEEK_SET, /) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._data)}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos


class S3Storage:
    name = "s3"

    def __init__(
        self,
        config: Config,
        *,
        max_attempts: int = 3,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        max_pool_connections: int = DEFAULT_MAX_POOL_CONNECTIONS,
    ) -> None:
        """``max_attempts`` counts every try of one request, the first included."""
        if not config.s3_bucket:
            raise ValueError("S3 storage needs ECHORA_S3_BUCKET")
        self._config = config
        self._bucket = config.s3_bucket
        prefix = config.s3_prefix.strip("/")
        self._prefix = f"{prefix}/" if prefix else ""
        self._part_size = config.s3_part_size
        self._aio_config = AioConfig(
            # Path style and checksums only when required: what every S3-compatible
            # store accepts (newer botocore's default CRC headers are often rejected).
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"total_max_attempts": max_attempts, "mode": "standard"},
            max_pool_connections=max_pool_connections,
        )
        self._stack: contextlib.AsyncExitStack | None = None
        self._s3: Any = None
        self._cleanups = ShieldedCleanups()

    @property
    def prefix(self) -> str:
        """The bucket prefix every logical key is stored under (``""`` or ``"x/"``)."""
        return self._prefix

    @property
    def _client(self) -> Any:
        if self._s3 is None:
            raise RuntimeError("S3Storage.start() was not awaited")
        return self._s3

    def _s3_key(self, key: str) -> str:
        return self._prefix + check_key(key)

    async def start(self) -> None:
        config = self._config
        key_id, secret = config.s3_access_key_id, config.s3_secret_access_key
        stack = contextlib.AsyncExitStack()
        try:
            self._s3 = await stack.enter_async_context(
                get_session().create_client(
                    "s3",
                    endpoint_url=config.s3_endpoint_url,
                    region_name=config.s3_region,
                    aws_access_key_id=key_id.get_secret_value() if key_id else None,
                    aws_secret_access_key=secret.get_secret_value() if secret else None,
                    config=self._aio_config,
                )
            )
            if config.s3_create_bucket:
                await self._create_bucket()
        except BaseException:
            self._s3 = None
            await stack.aclose()
            raise
        self._stack = stack

    async def _create_bucket(self) -> None:
        params: dict[str, Any] = {"Bucket": self._bucket}
        if self._config.s3_region != "us-east-1":  # AWS refuses the default region here
            params["CreateBucketConfiguration"] = {"LocationConstraint": self._config.s3_region}
        try:
            with _translated("CreateBucket"):
                await self._client.create_bucket(**params)
        except StorageError as exc:
            cause = exc.__cause__
            if not (
                isinstance(cause, ClientError)
                and _code(cause) in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists")
            ):
                raise

    async def close(self) -> None:
        await self._cleanups.drain()  # aborts of failed writes still need the client
        stack, self._stack, self._s3 = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    async def ping(self) -> None:
        with _translated("HeadBucket"):
            await self._client.head_bucket(Bucket=self._bucket)

    async def put_stream(
        self, key: str, chunks: AsyncIterator[bytes], *, content_type: str
    ) -> StoredObject:
        s3_key = self._s3_key(key)
        parts = _PartReader(aiter(chunks), self._part_size)
        part = await parts.next()
        if parts.drained:  # smaller than one part: a single PutObject
            return await self._put_single(key, s3_key, part, content_type)
        upload_id: str | None = None
        completing = False
        total = 0
        try:
            with _translated("CreateMultipartUpload"):
                created = await self._client.create_multipart_upload(
                    Bucket=self._bucket, Key=s3_key, ContentType=content_type
                )
            upload_id = created["UploadId"]
            done: list[dict[str, Any]] = []
            while part:
                number = len(done) + 1
                with _translated("UploadPart"):
                    uploaded = await self._client.upload_part(
                        Bucket=self._bucket,
                        Key=s3_key,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=_PartBody(part),
                    )
                done.append({"PartNumber": number, "ETag": uploaded["ETag"]})
                total += len(part)
                part = bytearray()  # drop the sent part before buffering the next one
                part = await parts.next()
            completing = True
            await self._complete(s3_key, upload_id, done, total)
        except BaseException as exc:
            written = completing and _maybe_written(exc)
            await self._cleanups.run(self._cleanup_write(s3_key, upload_id, written))
            raise
        return StoredObject(key=key, size=total)

    async def _put_single(
        self, key: str, s3_key: str, data: bytearray, content_type: str
    ) -> StoredObject:
        try:
            with _translated("PutObject"):
                await self._client.put_object(
                    Bucket=self._bucket, Key=s3_key, Body=_PartBody(data), ContentType=content_type
                )
        except BaseException as exc:
            if _maybe_written(exc):  # a timeout or cancellation may follow a stored object
                await self._cleanups.run(self._cleanup_write(s3_key, None, maybe_written=True))
            raise
        return StoredObject(key=key, size=len(data))

    async def _complete(
        self, s3_key: str, upload_id: str, parts: list[dict[str, Any]], total: int
    ) -> None:
        with _translated("CompleteMultipartUpload"):
            await self._client.complete_multipart_upload(
                Bucket=self._bucket,
                Key=s3_key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        # A Complete can answer 200 with an error inside; trust only the stored size.
        with _translated("HeadObject"):
            head = await self._client.head_object(Bucket=self._bucket, Key=s3_key)
        if head["ContentLength"] != total:
            raise StorageError(f"S3 stored {head['ContentLength']} bytes, sent {total}")

    async def _cleanup_write(self, s3_key: str, upload_id: str | None, maybe_written: bool) -> None:
        """Abort the upload and/or delete the object of a failed write; never raises."""
        last: Exception | None = None
        for delay in CLEANUP_DELAYS:
            await asyncio.sleep(delay)
            try:
                if upload_id is not None:
                    await self._abort(s3_key, upload_id)
                    upload_id = None
                if maybe_written:
                    await self._client.delete_object(Bucket=self._bucket, Key=s3_key)
                return
            except (ClientError, *_TRANSIENT) as exc:
                last = exc
                if not _transient(exc):  # e.g. access denied: retrying will not help
                    break
        log.warning(
            "s3 cleanup of a failed write to %s failed; left for the sweeper: %r", s3_key, last
        )

    async def _abort(self, s3_key: str, upload_id: str) -> None:
        try:
            await self._client.abort_multipart_upload(
                Bucket=self._bucket, Key=s3_key, UploadId=upload_id
            )
        except ClientError as exc:
            if _code(exc) not in ("NoSuchUpload", "404"):  # already gone is success
                raise

    async def open(self, key: str, start: int = 0, end: int | None = None) -> _S3Reader:
        params: dict[str, Any] = {"Bucket": self._bucket, "Key": self._s3_key(key)}
        check_range(start, end)
        ranged = (start, end) != (0, None)
        if ranged:
            params["Range"] = f"bytes={start}-{'' if end is None else end}"
        with _translated("GetObject", key):
            response = await self._client.get_object(**params)
        raw: aiohttp.ClientResponse = response["Body"].raw_stream
        try:
            length = int(response["ContentLength"])
            content_range = response.get("ContentRange")
            if content_range:
                size = int(content_range.rpartition("/")[2])
            elif ranged:  # a store that ignores Range would hand us the wrong bytes
                raise StorageError("S3 store ignored the Range header")
            else:
                size = length
        except BaseException:
            raw.close()
            raise
        return _S3Reader(raw, size, length)

    async def stat(self, key: str) -> ObjectInfo | None:
        try:
            with _translated("HeadObject", key):
                head = await self._client.head_object(Bucket=self._bucket, Key=self._s3_key(key))
        except ObjectNotFound:
            return None
        return ObjectInfo(
            key=key, size=int(head["ContentLength"]), last_modified=head["LastModified"]
        )

    async def delete(self, key: str) -> None:
        try:
            with _translated("DeleteObject", key):
                await self._client.delete_object(Bucket=self._bucket, Key=self._s3_key(key))
        except ObjectNotFound:
            pass  # S3 answers 204 for a missing key; some compatible stores say 404

    def _logical(self, s3_key: str) -> str | None:
        """Our key for a stored key, or None when it is not one of ours."""
        if not s3_key.startswith(self._prefix):
            return None
        key = s3_key[len(self._prefix) :]
        try:
            return check_key(key)
        except ValueError:
            return None

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        paginator = self._client.get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=self._bucket, Prefix=self._prefix + check_prefix(prefix))
        with _translated("ListObjectsV2"):
            async for page in pages:
                for item in page.get("Contents", ()):
                    key = self._logical(item["Key"])
                    if key is not None:
                        yield ObjectInfo(
                            key=key, size=int(item["Size"]), last_modified=item["LastModified"]
                        )

    async def list_pending_uploads(self) -> AsyncIterator[PendingUpload]:
        paginator = self._client.get_paginator("list_multipart_uploads")
        pages = paginator.paginate(Bucket=self._bucket, Prefix=self._prefix)
        with _translated("ListMultipartUploads"):
            async for page in pages:
                for item in page.get("Uploads", ()):
                    key = self._logical(item["Key"])
                    if key is not None:
                        yield PendingUpload(
                            key=key, upload_id=item["UploadId"], initiated=item["Initiated"]
                        )

    async def abort_pending_upload(self, upload: PendingUpload) -> None:
        with _translated("AbortMultipartUpload"):
            await self._abort(self._s3_key(upload.key), upload.upload_id)
