"""S3-compatible storage through aiobotocore, our keys under a prefix in one bucket."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import structlog
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import ClientError
from botocore.utils import get_environ_proxies

from echora_server.config import Config
from echora_server.core.tasks import OwnedTasks
from echora_server.storage import splice
from echora_server.storage.base import (
    Availability,
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
)
from echora_server.storage.s3.cors import PageOrigins
from echora_server.storage.s3.errors import bounded, error_code, translated
from echora_server.storage.s3.lean import LeanS3
from echora_server.storage.s3.presigned import (
    PROBE_KEY,
    origin_of,
    presign_post,
    presign_put,
    probe_checksum_put,
    probe_post_policy,
    stored_sha256,
)
from echora_server.storage.s3.reader import S3Reader
from echora_server.storage.s3.socket_reader import S3SocketReader, open_socket_reader
from echora_server.storage.s3.upload import S3Uploader, abort_upload

log = structlog.get_logger("echora.storage")

# An open reader holds a pooled connection until closed (minutes for a slow client) and
# aiohttp waits without limit for a free one: keep the pool far above concurrent downloads.
DEFAULT_MAX_POOL_CONNECTIONS = 100
CONNECT_TIMEOUT = 5.0
# A zero-copy read's URL is used at once; the margin covers clock skew with the store.
PRESIGNED_SECONDS = 300
# How long the store's CORS answer for a page origin is trusted, and for how many origins.


class S3Storage:
    name = "s3"

    def __init__(
        self,
        config: Config,
        *,
        max_attempts: int = 3,
        max_pool_connections: int = DEFAULT_MAX_POOL_CONNECTIONS,
    ) -> None:
        """``max_attempts`` counts every try of one request, the first included; all of them
        fit in ``config.storage_timeout``. ``storage_idle_timeout`` bounds each socket read."""
        if not config.s3_bucket:
            raise ValueError("S3 storage needs ECHORA_S3_BUCKET")
        self._config = config
        self._bucket = config.s3_bucket
        prefix = config.s3_prefix.strip("/")
        self._prefix = f"{prefix}/" if prefix else ""
        self._part_size = config.s3_part_size
        self._timeout = config.storage_timeout
        self._connect_timeout = min(CONNECT_TIMEOUT, config.storage_timeout)
        self._read_timeout = config.storage_idle_timeout
        # Splicing needs the body as it is on the wire: plain HTTP, straight to the store
        # (not through the HTTP proxy botocore would take from the environment).
        endpoint = config.s3_endpoint_url or ""
        self._zero_copy = (
            config.s3_zero_copy
            and splice.AVAILABLE
            and endpoint.lower().startswith("http://")
            and not get_environ_proxies(endpoint)
        )
        self._aio_config = AioConfig(
            # Path style and checksums only when required: what every S3-compatible
            # store accepts (newer botocore's default CRC headers are often rejected).
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            connect_timeout=self._connect_timeout,
            read_timeout=self._read_timeout,
            retries={"total_max_attempts": max_attempts, "mode": "standard"},
            max_pool_connections=max_pool_connections,
        )
        self._max_attempts = max_attempts
        self._max_pool_connections = max_pool_connections
        self.leftovers: LeftoverSink | None = None
        self.availability = Availability()
        self._stack: contextlib.AsyncExitStack | None = None
        self._s3: Any = None
        self._lean: LeanS3 | None = None
        self._cleanups = OwnedTasks()
        # Why presigned POSTs are not offered (None: they are), known after start().
        self.direct_upload_problem: str | None = "not probed"
        self.direct_upload_origin: str | None = None
        self.direct_put_problem: str | None = "not probed"
        self._presigner: Any = None  # signs PUT URLs for the host clients reach
        self._pages = PageOrigins(self._timeout)

    @property
    def prefix(self) -> str:
        return self._prefix

    @property
    def _client(self) -> Any:
        if self._s3 is None:
            raise RuntimeError("S3Storage.start() was not awaited")
        return self._s3

    @property
    def _lean_path(self) -> LeanS3:
        if self._lean is None:
            raise RuntimeError("S3Storage.start() was not awaited")
        return self._lean

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
            lean = LeanS3(
                self._s3,
                self._bucket,
                config.s3_region,
                max_attempts=self._max_attempts,
                connect_timeout=self._connect_timeout,
                read_timeout=self._read_timeout,
                max_connections=self._max_pool_connections,
            )
            await lean.start()
            stack.push_async_callback(lean.close)
            self._lean = lean
            if config.s3_create_bucket:
                await self._create_bucket()
            self._presigner = self._s3
            if config.s3_public_url:  # SigV4 signs the host: sign for the one clients reach
                self._presigner = await stack.enter_async_context(
                    get_session().create_client(
                        "s3",
                        endpoint_url=config.s3_public_url,
                        region_name=config.s3_region,
                        aws_access_key_id=key_id.get_secret_value() if key_id else None,
                        aws_secret_access_key=secret.get_secret_value() if secret else None,
                        config=self._aio_config,
                    )
                )
            if config.upload_direct:
                await self._probe_direct_uploads()
            else:
                self.direct_upload_problem = "ECHORA_UPLOAD_DIRECT is off"
                self.direct_put_problem = self.direct_upload_problem
        except BaseException:
            self._s3 = self._lean = self._presigner = None
            await stack.aclose()
            raise
        self._stack = stack

    async def _create_bucket(self) -> None:
        params: dict[str, Any] = {"Bucket": self._bucket}
        if self._config.s3_region != "us-east-1":  # AWS refuses the default region here
            params["CreateBucketConfiguration"] = {"LocationConstraint": self._config.s3_region}
        try:
            async with bounded("CreateBucket", self._timeout, self.availability):
                await self._client.create_bucket(**params)
        except StorageError as exc:
            cause = exc.__cause__
            if not (
                isinstance(cause, ClientError)
                and error_code(cause) in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists")
            ):
                raise

    async def _probe_direct_uploads(self) -> None:
        problem = await probe_checksum_put(self._client, self._bucket, self._prefix, self._timeout)
        self.direct_put_problem = problem and f"the store {problem}"
        if problem:
            log.warning("direct_puts_off", store=self.direct_put_problem)
        problem = await probe_post_policy(self._client, self._bucket, self._prefix, self._timeout)
        self.direct_upload_problem = problem and f"the store {problem}"
        if problem:
            log.warning("direct_uploads_off", store=self.direct_upload_problem)
        if self.direct_put_problem and self.direct_upload_problem:
            return
        form = await presign_post(  # only for its URL: the bucket's, where pages send
            self._client,
            self._bucket,
            self._s3_key(PROBE_KEY + "origin"),
            content_type="text/plain",
            size=0,
            expires_in=60,
            public_url=self._config.s3_public_url,
        )
        self._pages.url = form.url
        self.direct_upload_origin = origin_of(form.url)
        log.info("direct_uploads_on", origin=self.direct_upload_origin)

    async def accepts_pages_from(self, origin: str, method: str = "POST") -> bool:
        problem = self.direct_put_problem if method == "PUT" else self.direct_upload_problem
        if problem is not None or not self._pages.url:
            return False
        return await self._pages.allowed(origin, method)

    async def presign_post(
        self, key: str, *, content_type: str, size: int, expires_in: int
    ) -> PresignedPost | None:
        if self.direct_upload_problem is not None:
            return None
        with translated("PresignPost", key):
            return await presign_post(
                self._client,
                self._bucket,
                self._s3_key(key),
                content_type=content_type,
                size=size,
                expires_in=expires_in,
                public_url=self._config.s3_public_url,
            )

    async def presign_put(
        self, key: str, *, content_type: str, sha256: bytes, expires_in: int
    ) -> PresignedPut | None:
        if self.direct_put_problem is not None:
            return None
        with translated("PresignPut", key):
            return await presign_put(
                self._presigner,
                self._bucket,
                self._s3_key(key),
                content_type=content_type,
                sha256=sha256,
                expires_in=expires_in,
            )

    async def stored_sha256(self, key: str) -> bytes | None:
        try:
            async with bounded("HeadObject", self._timeout, self.availability, key):
                return await stored_sha256(self._client, self._bucket, self._s3_key(key))
        except ObjectNotFound:
            return None

    async def close(self) -> None:
        self._pages.close()
        await self._cleanups.drain()  # aborts of failed writes still need the client
        stack, self._stack, self._s3, self._lean = self._stack, None, None, None
        self._presigner = None
        if stack is not None:
            await stack.aclose()

    async def ping(self) -> None:
        async with bounded("HeadBucket", self._timeout, self.availability):
            await self._client.head_bucket(Bucket=self._bucket)

    async def put_stream(
        self,
        key: str,
        chunks: AsyncIterator[bytes],
        *,
        content_type: str,
        sha256: Callable[[], bytes] | None = None,
    ) -> StoredObject:
        s3_key = self._s3_key(key)
        uploader = S3Uploader(
            self._client,
            self._lean_path,
            self._bucket,
            self._part_size,
            self._cleanups,
            timeout=self._timeout,
            availability=self.availability,
            leftovers=self.leftovers,
        )
        size = await uploader.upload(key, s3_key, chunks, content_type=content_type, sha256=sha256)
        return StoredObject(key=key, size=size)

    async def open(
        self, key: str, start: int = 0, end: int | None = None, *, zero_copy: bool = False
    ) -> S3Reader | S3SocketReader:
        params: dict[str, Any] = {"Bucket": self._bucket, "Key": self._s3_key(key)}
        check_range(start, end)
        if zero_copy and self._zero_copy:
            with translated("GetObject", key):
                url = await self._client.generate_presigned_url(
                    "get_object", Params=params, ExpiresIn=PRESIGNED_SECONDS
                )
            async with bounded("GetObject", self._timeout, self.availability, key):
                reader = await open_socket_reader(
                    url,
                    start=start,
                    end=end,
                    connect_timeout=self._connect_timeout,
                    read_timeout=self._read_timeout,
                )
            if reader is not None:
                return reader
        ranged = (start, end) != (0, None)
        byte_range = f"bytes={start}-{'' if end is None else end}" if ranged else None
        async with bounded("GetObject", self._timeout, self.availability, key):
            response = await self._lean_path.get(params["Key"], byte_range)
        return S3Reader.from_http(response, ranged=ranged)

    async def stat(self, key: str) -> ObjectInfo | None:
        try:
            async with bounded("HeadObject", self._timeout, self.availability, key):
                head = await self._client.head_object(Bucket=self._bucket, Key=self._s3_key(key))
        except ObjectNotFound:
            return None
        return ObjectInfo(
            key=key, size=int(head["ContentLength"]), last_modified=head["LastModified"]
        )

    async def copy(self, source: str, target: str) -> None:
        async with bounded("CopyObject", self._timeout, self.availability, source):
            await self._client.copy_object(
                Bucket=self._bucket,
                Key=self._s3_key(target),
                CopySource={"Bucket": self._bucket, "Key": self._s3_key(source)},
            )

    async def delete(self, key: str) -> None:
        try:
            async with bounded("DeleteObject", self._timeout, self.availability, key):
                await self._client.delete_object(Bucket=self._bucket, Key=self._s3_key(key))
        except ObjectNotFound:
            pass  # S3 answers 204 for a missing key; some compatible stores say 404

    def _logical(self, s3_key: str) -> str | None:
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
        with translated("ListObjectsV2"):
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
        with translated("ListMultipartUploads"):
            async for page in pages:
                for item in page.get("Uploads", ()):
                    key = self._logical(item["Key"])
                    if key is not None:
                        yield PendingUpload(
                            key=key, upload_id=item["UploadId"], initiated=item["Initiated"]
                        )

    async def abort_pending_upload(self, upload: PendingUpload) -> None:
        async with bounded("AbortMultipartUpload", self._timeout, self.availability):
            await abort_upload(
                self._client, self._bucket, self._s3_key(upload.key), upload.upload_id
            )
