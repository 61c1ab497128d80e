"""The transfers bench/files.py times: through Echora, directly to S3, raw disk.

Every client reads its source file in 1 MiB (or one-part) reads while sending, and every
download is read in 1 MiB chunks and discarded: no path holds a whole big file in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from files_infra import MB, MiB, S3Target

CHUNK = MiB  # client read size, for uploads from disk and downloads alike


@dataclass(frozen=True)
class Timed:
    nbytes: int
    seconds: float

    @property
    def mb_per_s(self) -> float:
        return self.nbytes / MB / self.seconds if self.seconds > 0 else float("inf")


class TransferError(RuntimeError):
    """A transfer answered something other than the expected status or size."""


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    # Plain reads: the file was just written, so it comes from the page cache (~0.1 ms
    # per MiB), for this client and the direct one alike.
    with path.open("rb", buffering=0) as file:
        while chunk := file.read(CHUNK):
            yield chunk


async def _drain(content: aiohttp.StreamReader) -> int:
    received = 0
    async for chunk in content.iter_chunked(CHUNK):
        received += len(chunk)
    return received


# --- Echora -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Uploaded:
    url: str
    size: int
    sha256: str


class EchoraClient:
    """Uploads (raw body, ``curl -T`` style) and downloads through one Echora server."""

    def __init__(
        self, session: aiohttp.ClientSession, base_url: str, token: str, workspace_id: int
    ) -> None:
        self._session = session
        self._base = base_url
        self._auth = {"Authorization": f"Bearer {token}"}
        self._workspace_id = workspace_id

    async def _post(self, name: str, body: Any, size: int) -> Uploaded:
        params = {"filename": name, "workspace_id": str(self._workspace_id)}
        headers = {
            **self._auth,
            "Content-Type": "application/octet-stream",
            "Content-Length": str(size),  # as curl -T sends it (no chunked encoding)
        }
        async with self._session.post(
            f"{self._base}/api/upload", params=params, data=body, headers=headers
        ) as response:
            answer = await response.read()
            if response.status != 201:
                raise TransferError(f"upload of {name}: {response.status} {answer[:300]!r}")
            found = (await response.json())["attachments"][0]
        if found["size"] != size:
            raise TransferError(f"upload of {name}: stored {found['size']} of {size} bytes")
        return Uploaded(found["url"], found["size"], found["sha256"])

    async def upload_file(self, path: Path, name: str) -> tuple[Uploaded, Timed]:
        size = path.stat().st_size
        started = time.perf_counter()
        uploaded = await self._post(name, _file_chunks(path), size)
        return uploaded, Timed(size, time.perf_counter() - started)

    async def upload_bytes(self, data: bytes, name: str) -> Uploaded:
        return await self._post(name, data, len(data))

    async def download(self, url: str, expected: int) -> Timed:
        started = time.perf_counter()
        async with self._session.get(f"{self._base}{url}", headers=self._auth) as response:
            if response.status != 200:
                raise TransferError(f"download {url}: {response.status}")
            received = await _drain(response.content)
        seconds = time.perf_counter() - started
        if received != expected:
            raise TransferError(f"download {url}: {received} of {expected} bytes")
        return Timed(received, seconds)

    async def sha256(self, url: str) -> str:
        """The downloaded bytes' SHA-256 (integrity check, untimed)."""
        digest = hashlib.sha256()
        async with self._session.get(f"{self._base}{url}", headers=self._auth) as response:
            async for chunk in response.content.iter_chunked(CHUNK):
                digest.update(chunk)
        return digest.hexdigest()


class ReferenceClient:
    """Uploads and downloads through bench/files_minimal.py (no auth, no database)."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str) -> None:
        self._session = session
        self._base = base_url

    async def upload_file(self, path: Path, name: str) -> tuple[str, Timed]:
        size = path.stat().st_size
        started = time.perf_counter()
        async with self._session.put(
            f"{self._base}/f/{name}",
            data=_file_chunks(path),
            headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"},
        ) as response:
            answer = await response.read()
            if response.status != 201:
                raise TransferError(f"reference upload: {response.status} {answer[:300]!r}")
            sha256: str = (await response.json())["sha256"]
        return sha256, Timed(size, time.perf_counter() - started)

    async def download(self, name: str, expected: int) -> Timed:
        started = time.perf_counter()
        async with self._session.get(f"{self._base}/f/{name}") as response:
            if response.status != 200:
                raise TransferError(f"reference download {name}: {response.status}")
            received = await _drain(response.content)
        seconds = time.perf_counter() - started
        if received != expected:
            raise TransferError(f"reference download {name}: {received} of {expected} bytes")
        return Timed(received, seconds)


class RawServedClient:
    """Downloads from bench/files_rawserve.py: the raw read, sent over a loopback socket."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str) -> None:
        self._session = session
        self._base = base_url

    async def download(self, name: str, expected: int) -> Timed:
        started = time.perf_counter()
        async with self._session.get(f"{self._base}/{name}") as response:
            if response.status != 200:
                raise TransferError(f"raw served {name}: {response.status}")
            received = await _drain(response.content)
        seconds = time.perf_counter() - started
        if received != expected:
            raise TransferError(f"raw served {name}: {received} of {expected} bytes")
        return Timed(received, seconds)


# --- direct S3 --------------------------------------------------------------------------------


def aio_config() -> AioConfig:
    """The configuration Echora's S3 storage uses (path style, checksums only when
    required), with the same connection pool size."""
    return AioConfig(
        signature_version="s3v4",
        s3={"addressing_style": "path"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        max_pool_connections=100,
    )


class DirectS3:
    """The baseline: one aiobotocore client on the same SeaweedFS and bucket."""

    def __init__(self, client: Any, bucket: str, part_size: int) -> None:
        self._s3 = client
        self._bucket = bucket
        self._part_size = part_size

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, target: S3Target, part_size: int) -> AsyncIterator[DirectS3]:
        async with get_session().create_client(
            "s3",
            endpoint_url=target.endpoint_url,
            region_name=target.region,
            aws_access_key_id=target.access_key,
            aws_secret_access_key=target.secret_key,
            config=aio_config(),
        ) as client:
            yield cls(client, target.bucket, part_size)

    async def upload_file(self, path: Path, key: str) -> Timed:
        """Sequential multipart upload, one part read from disk at a time (a single
        PutObject below one part, as Echora does)."""
        size = path.stat().st_size
        started = time.perf_counter()
        with path.open("rb", buffering=0) as file:
            if size <= self._part_size:
                await self._s3.put_object(Bucket=self._bucket, Key=key, Body=file.read())
            else:
                created = await self._s3.create_multipart_upload(Bucket=self._bucket, Key=key)
                upload_id = created["UploadId"]
                parts: list[dict[str, Any]] = []
                while part := file.read(self._part_size):
                    number = len(parts) + 1
                    done = await self._s3.upload_part(
                        Bucket=self._bucket,
                        Key=key,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=part,
                    )
                    parts.append({"PartNumber": number, "ETag": done["ETag"]})
                    del part
                await self._s3.complete_multipart_upload(
                    Bucket=self._bucket,
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                )
        return Timed(size, time.perf_counter() - started)

    async def download(self, key: str, expected: int) -> Timed:
        started = time.perf_counter()
        response = await self._s3.get_object(Bucket=self._bucket, Key=key)
        raw: aiohttp.ClientResponse = response["Body"].raw_stream
        try:
            received = await _drain(raw.content)
        finally:
            raw.close()
        seconds = time.perf_counter() - started
        if received != expected:
            raise TransferError(f"direct GET {key}: {received} of {expected} bytes")
        return Timed(received, seconds)

    async def put(self, key: str, data: bytes) -> None:
        await self._s3.put_object(Bucket=self._bucket, Key=key, Body=data)

    async def get(self, key: str) -> int:
        response = await self._s3.get_object(Bucket=self._bucket, Key=key)
        async with response["Body"] as body:
            return len(await body.read())

    async def delete(self, key: str) -> None:
        await self._s3.delete_object(Bucket=self._bucket, Key=key)


# --- raw disk ---------------------------------------------------------------------------------


def raw_write(source: Path, target: Path) -> Timed:
    """Copy ``source`` to ``target`` in 1 MiB reads and writes, then fsync (as Echora's
    local backend does before it renames its temp file into place)."""
    size = 0
    started = time.perf_counter()
    with source.open("rb", buffering=0) as src, target.open("wb", buffering=0) as dst:
        while chunk := src.read(CHUNK):
            dst.write(chunk)
            size += len(chunk)
        os.fsync(dst.fileno())
    return Timed(size, time.perf_counter() - started)


def raw_read(path: Path) -> Timed:
    size = 0
    started = time.perf_counter()
    with path.open("rb", buffering=0) as file:
        while chunk := file.read(CHUNK):
            size += len(chunk)
    return Timed(size, time.perf_counter() - started)


# --- request rates ----------------------------------------------------------------------------


async def rate(count: int, concurrency: int, request: Callable[[int], Awaitable[Any]]) -> float:
    """Requests per second for ``request(0..count-1)`` run by ``concurrency`` workers."""
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < count:
            index = next_index
            next_index += 1
            await request(index)

    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(worker())
    return count / (time.perf_counter() - started)
