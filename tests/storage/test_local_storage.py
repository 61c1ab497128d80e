"""Local storage's leftovers: a temp file a failed write could not remove is removed by name,
and nothing but a temp file name is accepted."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from echora_server.storage.base import ObjectNotFound, PendingUpload
from echora_server.storage.local.storage import LocalStorage
from echora_server.storage.local.tempfile import TEMP_DIR


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[LocalStorage]:
    store = LocalStorage(tmp_path / "files")
    await store.start()
    yield store
    await store.close()


async def test_a_leftover_temp_file_is_removed_by_its_name(storage: LocalStorage) -> None:
    name = f"{secrets.token_hex(16)}.part"
    left = storage.root / TEMP_DIR / name
    left.write_bytes(b"half a file")
    kept = storage.root / TEMP_DIR / f"{secrets.token_hex(16)}.part"
    kept.write_bytes(b"another upload, still running")
    await storage.abort_pending_upload(PendingUpload("files/1/x", name, dt.datetime.now(dt.UTC)))
    assert not left.exists() and kept.exists()
    await storage.abort_pending_upload(PendingUpload("files/1/x", name, dt.datetime.now(dt.UTC)))


@pytest.mark.parametrize("name", ["../files/secret", "x.part", "/etc/passwd", f"{'a' * 32}.txt"])
async def test_only_a_temp_file_name_is_taken(storage: LocalStorage, name: str) -> None:
    with pytest.raises(ValueError, match="not a temp file name"):
        await storage.abort_pending_upload(
            PendingUpload("files/1/x", name, dt.datetime.now(dt.UTC))
        )


async def test_a_copy_is_whole_and_its_own(storage: LocalStorage) -> None:
    data = secrets.token_bytes(3 * 1024 * 1024 + 5)
    await storage.put_stream("files/1/a", _once(data), content_type="application/octet-stream")
    await storage.copy("files/1/a", "files/2/b")
    await storage.delete("files/1/a")
    async with await storage.open("files/2/b") as reader:
        assert b"".join([chunk async for chunk in reader.chunks()]) == data
    with pytest.raises(ObjectNotFound):
        await storage.copy("files/1/a", "files/2/c")
    assert await storage.stat("files/2/c") is None
    assert list((storage.root / TEMP_DIR).iterdir()) == []  # no temp file left


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data
