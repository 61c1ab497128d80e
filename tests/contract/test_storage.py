"""The storage contract: local disk and S3 (a real SeaweedFS) behave the same."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import itertools
import os
import random
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support.faultproxy import FaultProxy
from support.seaweed import S3Server, direct_s3_client

from echora_server.config import Config
from echora_server.storage.base import (
    InvalidRange,
    ObjectNotFound,
    ObjectTooLarge,
    Storage,
    StorageError,
)
from echora_server.storage.factory import create_storage
from echora_server.storage.local.storage import LocalStorage
from echora_server.storage.s3.socket_reader import S3SocketReader
from echora_server.storage.s3.storage import DEFAULT_MAX_POOL_CONNECTIONS, S3Storage

MiB = 1024 * 1024
PART = 5 * MiB  # S3's minimum part size: the smallest multipart test
ODD_SIZES = (65_537, 1, 300_001, 12_345, 777_777)


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


async def odd_chunks(data: bytes) -> AsyncIterator[bytes]:
    """``data`` in irregular chunks, as a socket would deliver it (they straddle parts)."""
    pos = 0
    for size in itertools.cycle(ODD_SIZES):
        if pos >= len(data):
            return
        yield data[pos : pos + size]
        pos += size


async def read_all(
    storage: Storage, key: str, start: int = 0, end: int | None = None, *, zero_copy: bool = False
) -> bytes:
    async with await storage.open(key, start, end, zero_copy=zero_copy) as reader:
        data = b"".join([chunk async for chunk in reader.chunks()])
        assert len(data) == reader.length
    return data


@pytest.fixture(params=["local", "s3"])
def storage_config(request: pytest.FixtureRequest, tmp_path: Path) -> Config:
    if request.param == "local":
        return Config(data_dir=tmp_path, storage="local")
    values = request.getfixturevalue("s3_config_values")
    return Config(data_dir=tmp_path, s3_part_size=PART, **values)


@pytest.fixture
async def storage(storage_config: Config) -> AsyncIterator[Storage]:
    store = create_storage(storage_config)
    await store.start()
    try:
        yield store
    finally:
        await store.close()


@dataclass
class Leftovers:
    objects: list[str]
    uploads: list[str]
    temp_files: list[str]

    def __bool__(self) -> bool:
        return bool(self.objects or self.uploads or self.temp_files)


LeftoverCheck = Callable[[Storage], Awaitable[Leftovers]]


async def pending_uploads(server: S3Server, prefix: str) -> list[str]:
    """ListMultipartUploads straight from the server, not through our code."""
    async with direct_s3_client(server) as client:
        found = await client.list_multipart_uploads(Bucket=server.bucket, Prefix=prefix)
    return [u["Key"] for u in found.get("Uploads", []) if u["Key"].startswith(prefix)]


@pytest.fixture
def leftovers(request: pytest.FixtureRequest, storage_config: Config) -> LeftoverCheck:
    """What a failed write might have left: objects, multipart uploads, temp files."""
    is_s3 = storage_config.effective_storage == "s3"
    server: S3Server | None = request.getfixturevalue("s3_server") if is_s3 else None

    async def check(storage: Storage) -> Leftovers:
        objects = [info.key async for info in storage.list()]
        uploads = [upload.key async for upload in storage.list_pending_uploads()]
        if server is not None:  # and ask the server itself, not only our code
            uploads += await pending_uploads(server, f"{storage_config.s3_prefix}/")
            return Leftovers(objects, uploads, [])
        return Leftovers(objects, uploads, os.listdir(storage_config.files_dir / ".tmp"))

    return check


async def test_small_object_round_trip(storage: Storage) -> None:
    stored = await storage.put_stream(
        "files/1/small", odd_chunks(b"hello, world"), content_type="text/plain"
    )
    assert (stored.key, stored.size) == ("files/1/small", 12)
    assert await read_all(storage, "files/1/small") == b"hello, world"
    info = await storage.stat("files/1/small")
    assert info is not None and (info.key, info.size) == ("files/1/small", 12)
    assert abs(info.last_modified - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=5)


async def test_empty_object(storage: Storage) -> None:
    stored = await storage.put_stream("files/1/empty", odd_chunks(b""), content_type="x/y")
    assert stored.size == 0
    assert await read_all(storage, "files/1/empty") == b""
    with pytest.raises(InvalidRange):
        await storage.open("files/1/empty", 0, 0)


async def test_multipart_round_trip_and_ranges(
    storage: Storage, request: pytest.FixtureRequest
) -> None:
    data = payload(11 * MiB + 12_345, seed=1)
    stored = await storage.put_stream("files/1/big", odd_chunks(data), content_type="x/y")
    assert stored.size == len(data)
    assert await read_all(storage, "files/1/big") == data
    if isinstance(storage, S3Storage):  # really three parts: a multipart ETag says "-3"
        server: S3Server = request.getfixturevalue("s3_server")
        async with direct_s3_client(server) as client:
            head = await client.head_object(
                Bucket=server.bucket, Key=f"{storage.prefix}files/1/big"
            )
        assert head["ETag"].strip('"').endswith("-3")
    # A range across the first part boundary.
    assert (
        await read_all(storage, "files/1/big", PART - 10, PART + 9) == data[PART - 10 : PART + 10]
    )


RANGES = [
    (0, 0),
    (0, 99),
    (1000, 4999),
    (12_345, 12_345),
    (299_900, None),  # suffix to the end
    (299_990, 400_000),  # end past the last byte is clamped
    (0, None),
]


zero_copy_or_not = pytest.mark.parametrize("zero_copy", [False, True], ids=["pooled", "own"])


def offers_socket(storage: Storage, zero_copy: bool) -> bool:
    """Whether a read gets a socket of its own (S3 over plain HTTP, when asked)."""
    return zero_copy and isinstance(storage, S3Storage)


@zero_copy_or_not
async def test_ranged_reads(storage: Storage, zero_copy: bool) -> None:
    data = payload(300_000, seed=2)
    await storage.put_stream("files/1/r", odd_chunks(data), content_type="x/y")
    for start, end in RANGES:
        expected = data[start : None if end is None else end + 1]
        async with await storage.open("files/1/r", start, end, zero_copy=zero_copy) as reader:
            assert (reader.size, reader.length) == (len(data), len(expected))
            assert isinstance(reader, S3SocketReader) == offers_socket(storage, zero_copy)
        got = await read_all(storage, "files/1/r", start, end, zero_copy=zero_copy)
        assert got == expected, (start, end)
    for start, end in [(300_000, None), (300_005, 300_010)]:
        with pytest.raises(InvalidRange):
            await storage.open("files/1/r", start, end, zero_copy=zero_copy)
    for start, end in [(-1, 5), (10, 5)]:
        with pytest.raises(ValueError):
            await storage.open("files/1/r", start, end)


@zero_copy_or_not
async def test_missing_object(storage: Storage, zero_copy: bool) -> None:
    with pytest.raises(ObjectNotFound):  # (on S3 this opens the pool's connection)
        await storage.open("files/1/missing")
    fds = len(os.listdir("/proc/self/fd"))
    with pytest.raises(ObjectNotFound):
        await storage.open("files/1/missing", zero_copy=zero_copy)
    with pytest.raises(ObjectNotFound):
        await storage.open("files/1/missing", 5, 10, zero_copy=zero_copy)
    # A socket of its own that got a 404 is closed before the pooled read answers.
    assert len(os.listdir("/proc/self/fd")) == fds
    assert await storage.stat("files/1/missing") is None


async def test_delete_is_idempotent(storage: Storage) -> None:
    await storage.put_stream("files/1/gone", odd_chunks(b"x" * 10), content_type="x/y")
    await storage.delete("files/1/gone")
    await storage.delete("files/1/gone")
    await storage.delete("files/1/never-existed")
    assert await storage.stat("files/1/gone") is None
    with pytest.raises(ObjectNotFound):
        await storage.open("files/1/gone")


async def test_list_by_prefix(storage: Storage) -> None:
    keys = ["files/1/a", "files/1/b", "files/10/c", "files/2/d", "thumbs/1/e"]
    for size, key in enumerate(keys, start=1):
        await storage.put_stream(key, odd_chunks(b"z" * size), content_type="x/y")

    async def listed(prefix: str) -> dict[str, int]:
        return {info.key: info.size async for info in storage.list(prefix)}

    assert await listed("") == {key: size for size, key in enumerate(keys, start=1)}
    assert await listed("files/1/") == {"files/1/a": 1, "files/1/b": 2}
    assert await listed("files/1") == {"files/1/a": 1, "files/1/b": 2, "files/10/c": 3}
    assert await listed("files/") == {
        "files/1/a": 1,
        "files/1/b": 2,
        "files/10/c": 3,
        "files/2/d": 4,
    }
    assert await listed("thumbs/1/e") == {"thumbs/1/e": 5}
    assert await listed("nothing/") == {}
    with pytest.raises(ValueError):
        await listed("../")


async def test_failing_source_leaves_nothing(storage: Storage, leftovers: LeftoverCheck) -> None:
    data = payload(6 * MiB, seed=3)

    async def too_large() -> AsyncIterator[bytes]:
        async for chunk in odd_chunks(data):  # 6 MiB: one part is already uploaded
            yield chunk
        raise ObjectTooLarge("over the limit")

    with pytest.raises(ObjectTooLarge):
        await storage.put_stream("files/1/too-large", too_large(), content_type="x/y")
    assert not await leftovers(storage)
    assert await storage.stat("files/1/too-large") is None


async def test_cancelled_put_leaves_nothing(storage: Storage, leftovers: LeftoverCheck) -> None:
    reached = asyncio.Event()

    async def stalls() -> AsyncIterator[bytes]:
        async for chunk in odd_chunks(payload(6 * MiB, seed=4)):
            yield chunk
        reached.set()
        await asyncio.sleep(3600)  # a client that stops sending
        yield b"never"

    task = asyncio.create_task(storage.put_stream("files/1/cancelled", stalls(), content_type="x"))
    await asyncio.wait_for(reached.wait(), 10)
    if isinstance(storage, S3Storage):
        assert await pending_uploads_of(storage), "the first part should be in flight"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not await leftovers(storage)


async def pending_uploads_of(storage: S3Storage) -> list[str]:
    return [upload.key async for upload in storage.list_pending_uploads()]


@pytest.mark.parametrize("delay", [0.0, 0.01, 0.04, 0.1, 0.3])
async def test_put_cancelled_at_any_moment_is_all_or_nothing(
    storage: Storage, leftovers: LeftoverCheck, delay: float
) -> None:
    """Cancelled wherever it happens to be (reading, uploading a part, completing):
    either the whole object is stored or nothing is."""
    data = payload(11 * MiB, seed=7)
    task = asyncio.create_task(
        storage.put_stream("files/1/racy", odd_chunks(data), content_type="x")
    )
    await asyncio.sleep(delay)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        assert not await leftovers(storage)
    else:
        assert await read_all(storage, "files/1/racy") == data


BAD_KEYS = [
    "",
    "../x",
    "files/../../x",
    "/etc/passwd",
    "files//x",
    "files/x/",
    "files/./x",
    ".tmp/x",
    "files\\x",
    "files/x y",
    "files/é",
    "files/x\x00",
    "x" * 600,
]


@pytest.mark.parametrize("key", BAD_KEYS)
async def test_invalid_keys_are_refused(storage: Storage, key: str) -> None:
    with pytest.raises(ValueError):
        await storage.put_stream(key, odd_chunks(b"x"), content_type="x/y")
    with pytest.raises(ValueError):
        await storage.open(key)
    with pytest.raises(ValueError):
        await storage.stat(key)
    with pytest.raises(ValueError):
        await storage.delete(key)


@zero_copy_or_not
async def test_early_closed_readers_release_connections(storage: Storage, zero_copy: bool) -> None:
    await storage.put_stream("files/1/many", odd_chunks(payload(2 * MiB)), content_type="x/y")
    fds_before = len(os.listdir("/proc/self/fd"))
    # More opens than the S3 connection pool holds: a leaked connection would make
    # the next open wait for a free one forever.
    async with asyncio.timeout(30):
        for _ in range(DEFAULT_MAX_POOL_CONNECTIONS // 2 + 10):
            reader = await storage.open("files/1/many", zero_copy=zero_copy)
            try:
                async for _chunk in reader.chunks():
                    break
            finally:
                await reader.close()
            async with await storage.open("files/1/many", 1000, zero_copy=zero_copy) as reader:
                async for _chunk in reader.chunks(4096):
                    break
    # Files, and sockets of their own, are closed with their readers (pooled S3
    # connections stay open for the next request).
    if isinstance(storage, LocalStorage) or zero_copy:
        assert len(os.listdir("/proc/self/fd")) == fds_before


async def test_ping(storage: Storage) -> None:
    await storage.ping()


async def test_bounded_memory(storage: Storage) -> None:
    """64 MiB from a generator: Python-allocated memory stays within a few parts."""
    block = payload(256 * 1024, seed=5)

    async def stream() -> AsyncIterator[bytes]:
        for _ in range(256):
            yield block

    tracemalloc.start()
    try:
        stored = await storage.put_stream("files/1/huge", stream(), content_type="x/y")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert stored.size == 64 * MiB
    info = await storage.stat("files/1/huge")
    assert info is not None and info.size == 64 * MiB
    assert peak < 3 * PART, f"peak {peak / MiB:.1f} MiB"
    await storage.delete("files/1/huge")


async def test_local_path_jail_refuses_symlinks_out(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    store = LocalStorage(tmp_path / "files")
    await store.start()
    (tmp_path / "files" / "evil").symlink_to(outside)
    with pytest.raises(ValueError):
        await store.open("evil/secret")
    with pytest.raises(ValueError):
        await store.stat("evil/secret")
    with pytest.raises(ValueError):
        await store.put_stream("evil/new", odd_chunks(b"x"), content_type="x/y")
    with pytest.raises(ValueError):
        await store.delete("evil/secret")
    assert sorted(os.listdir(outside)) == ["secret"]
    assert [info.key async for info in store.list()] == []
    assert [info.key async for info in store.list("evil/")] == []
    await store.close()


async def test_local_temp_files_are_hidden_and_swept(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path / "files")
    await store.start()
    await store.put_stream("files/1/kept", odd_chunks(b"kept"), content_type="x/y")
    stale = tmp_path / "files" / ".tmp" / "stale.part"
    stale.write_bytes(b"partial")
    old = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)).timestamp()
    os.utime(stale, (old, old))
    fresh = tmp_path / "files" / ".tmp" / "fresh.part"
    fresh.write_bytes(b"partial")
    assert [info.key async for info in store.list()] == ["files/1/kept"]
    assert await store.sweep_temp(dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)) == 1
    assert not stale.exists() and fresh.exists()
    assert [u async for u in store.list_pending_uploads()] == []
    await store.close()


# --- S3 only: the store's own behaviour and faults between us and it ---


@pytest.fixture
async def s3_storage(tmp_path: Path, s3_config_values: dict[str, Any]) -> AsyncIterator[S3Storage]:
    store = S3Storage(Config(data_dir=tmp_path, s3_part_size=PART, **s3_config_values))
    await store.start()
    try:
        yield store
    finally:
        await store.close()


async def test_s3_pending_uploads_are_listed_and_aborted(
    s3_storage: S3Storage, s3_server: S3Server
) -> None:
    async with direct_s3_client(s3_server) as client:
        await client.create_multipart_upload(
            Bucket=s3_server.bucket, Key=f"{s3_storage.prefix}files/1/stale"
        )
    pending = [upload async for upload in s3_storage.list_pending_uploads()]
    assert [upload.key for upload in pending] == ["files/1/stale"]
    await s3_storage.abort_pending_upload(pending[0])
    await s3_storage.abort_pending_upload(pending[0])  # idempotent
    assert await pending_uploads(s3_server, s3_storage.prefix) == []


async def test_s3_create_bucket_tolerates_existing(
    tmp_path: Path, s3_config_values: dict[str, Any]
) -> None:
    store = S3Storage(Config(data_dir=tmp_path, s3_create_bucket=True, **s3_config_values))
    await store.start()
    await store.ping()
    await store.close()


async def test_s3_zero_copy_can_be_turned_off(
    tmp_path: Path, s3_config_values: dict[str, Any]
) -> None:
    """Turned off, or with an HTTP proxy for the endpoint (which only the pool uses)."""
    turned_off = Config(data_dir=tmp_path, s3_zero_copy=False, **s3_config_values)
    with pytest.MonkeyPatch.context() as env:
        # Set while the storage is built (when it decides), unset before its client
        # starts, which would otherwise send everything to this dead proxy.
        env.setenv("HTTP_PROXY", "http://127.0.0.1:1")
        proxied = S3Storage(Config(data_dir=tmp_path, **s3_config_values))
    for store in (S3Storage(turned_off), proxied):
        await store.start()
        try:
            await store.put_stream("files/1/z", odd_chunks(payload(1000)), content_type="x/y")
            async with await store.open("files/1/z", zero_copy=True) as reader:
                assert reader.socket_body() is None  # read through the pool, as chunks
                assert b"".join([c async for c in reader.chunks()]) == payload(1000)
        finally:
            await store.close()


def on_upload_part(store: S3Storage, hook: Callable[[int], Awaitable[None]]) -> None:
    """Run ``hook(part_number)`` just before each UploadPart request goes out."""

    async def before_send(request: Any, **_: Any) -> None:
        query = dict(pair.split("=", 1) for pair in request.url.split("?", 1)[1].split("&"))
        await hook(int(query["partNumber"]))

    store._client.meta.events.register("before-send.s3.UploadPart", before_send)


async def test_s3_next_part_fills_while_one_is_sent(s3_storage: S3Storage) -> None:
    """While part 1 is on its way the source is read to the end of part 2, and no
    further: the client keeps sending during an UploadPart, two parts buffered at most."""
    data = payload(3 * PART + MiB, seed=10)
    yielded = 0

    async def source() -> AsyncIterator[bytes]:
        nonlocal yielded
        for start in range(0, len(data), MiB):
            yielded += MiB
            yield data[start : start + MiB]

    read_during_part_1: list[int] = []

    async def hold_part_1(number: int) -> None:
        if number == 1:
            async with asyncio.timeout(10):  # a sequential upload never gets there
                while yielded < 2 * PART:
                    await asyncio.sleep(0.005)
            await asyncio.sleep(0.3)  # time to read further, if it would
            read_during_part_1.append(yielded)

    on_upload_part(s3_storage, hold_part_1)
    stored = await s3_storage.put_stream("files/1/pipelined", source(), content_type="x/y")
    assert read_during_part_1 == [2 * PART]
    assert stored.size == len(data)
    assert await read_all(s3_storage, "files/1/pipelined") == data


async def test_s3_source_failing_while_a_part_is_sent_leaves_nothing(
    s3_storage: S3Storage, s3_server: S3Server
) -> None:
    """The client's error arrives while part 1 is in flight (and would stay there): the
    part is cancelled and the upload aborted at once."""
    failed = asyncio.Event()

    async def source() -> AsyncIterator[bytes]:
        yield payload(PART + MiB, seed=11)
        failed.set()
        raise ObjectTooLarge("over the limit")

    async def stall_part_1(number: int) -> None:
        await failed.wait()
        await asyncio.sleep(3600)  # a store that never answers

    on_upload_part(s3_storage, stall_part_1)
    async with asyncio.timeout(10):
        with pytest.raises(ObjectTooLarge):
            await s3_storage.put_stream("files/1/failing", source(), content_type="x/y")
    assert await pending_uploads(s3_server, s3_storage.prefix) == []
    assert [info async for info in s3_storage.list()] == []


async def test_s3_bad_credentials_raise_storage_error(
    tmp_path: Path, s3_config_values: dict[str, Any]
) -> None:
    values = {**s3_config_values, "s3_secret_access_key": "wrong"}
    store = S3Storage(Config(data_dir=tmp_path, **values), max_attempts=1)
    await store.start()
    try:
        with pytest.raises(StorageError) as caught:
            await store.ping()
        assert type(caught.value) is StorageError
        with pytest.raises(StorageError):
            await store.put_stream("files/1/x", odd_chunks(b"x"), content_type="x/y")
    finally:
        await store.close()


@pytest.fixture
async def proxy(s3_server: S3Server) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(("127.0.0.1", s3_server.port)) as proxy:
        yield proxy


@pytest.fixture
async def proxied(
    proxy: FaultProxy, tmp_path: Path, s3_config_values: dict[str, Any]
) -> AsyncIterator[S3Storage]:
    """S3 storage reached through the fault proxy; one attempt per request."""
    values = {**s3_config_values, "s3_endpoint_url": proxy.url}
    store = S3Storage(Config(data_dir=tmp_path, s3_part_size=PART, **values), max_attempts=1)
    await store.start()
    try:
        yield store
    finally:
        await store.close()


async def test_s3_ping_fails_while_cut(proxied: S3Storage, proxy: FaultProxy) -> None:
    await proxied.ping()
    proxy.block()
    with pytest.raises(StorageError):
        await proxied.ping()
    proxy.unblock()
    await proxied.ping()


@zero_copy_or_not
async def test_s3_read_cut_midway_raises_storage_error(
    proxied: S3Storage, proxy: FaultProxy, zero_copy: bool
) -> None:
    await proxied.put_stream("files/1/read", odd_chunks(payload(11 * MiB)), content_type="x/y")
    async with await proxied.open("files/1/read", zero_copy=zero_copy) as reader:
        assert isinstance(reader, S3SocketReader) == zero_copy
        with pytest.raises(StorageError):
            async for _chunk in reader.chunks():
                proxy.block()


async def test_s3_retried_upload_part_sends_the_whole_part_again(
    proxy: FaultProxy, tmp_path: Path, s3_config_values: dict[str, Any]
) -> None:
    """A part is signed (read to its end) and then sent; a retry seeks back and sends it
    again from its first byte: the stored object is exactly the source."""
    values = {**s3_config_values, "s3_endpoint_url": proxy.url}
    store = S3Storage(Config(data_dir=tmp_path, s3_part_size=PART, **values), max_attempts=5)
    await store.start()
    data = payload(12 * MiB, seed=9)

    async def refuse_once_after_first_part() -> AsyncIterator[bytes]:
        yield data[: 6 * MiB]
        proxy.block()  # part 1 is in flight or about to be: cut or refused, then retried
        yield data[6 * MiB :]

    async def heal() -> None:
        await proxy.wait_refused(1)
        proxy.unblock()

    try:
        healer = asyncio.create_task(heal())
        stored_object = await store.put_stream(
            "files/1/retried", refuse_once_after_first_part(), content_type="x/y"
        )
        await healer
        assert stored_object.size == len(data) and proxy.refused >= 1
        async with await store.open("files/1/retried") as reader:
            stored = b"".join([chunk async for chunk in reader.chunks()])
        assert hashlib.sha256(stored).digest() == hashlib.sha256(data).digest()
        assert await pending_uploads_of(store) == []
    finally:
        await store.close()


async def test_s3_upload_cut_midway_leaves_no_upload(
    proxied: S3Storage, proxy: FaultProxy, s3_server: S3Server
) -> None:
    data = payload(11 * MiB, seed=6)

    async def cut_after_first_part() -> AsyncIterator[bytes]:
        yield data[: 6 * MiB]  # asked again while part 1 is sent: the cut fails it
        proxy.block()
        yield data[6 * MiB :]

    async def heal() -> None:
        # Refused connections: the failing UploadPart (at most 2: aiohttp retries a
        # stale pooled connection once), then at least one abort attempt. Healing after
        # that proves the abort is retried until it gets through.
        await proxy.wait_refused(3)
        proxy.unblock()

    healer = asyncio.create_task(heal())
    with pytest.raises(StorageError):
        await proxied.put_stream("files/1/cut", cut_after_first_part(), content_type="x/y")
    await healer
    assert await pending_uploads(s3_server, proxied.prefix) == []
    assert [info async for info in proxied.list()] == []
