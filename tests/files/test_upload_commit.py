"""An upload's rows are one statement committed on its own. When its answer is lost, the
server must learn whether it committed before deleting any object: nothing orphaned, and
nothing deleted that a row references.

The INSERT is held at a lock the test owns (a trigger takes it), so the connection can be cut
while the statement is in the server, deterministically."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from support.faultproxy import FaultProxy
from support.people import People
from support.postgres import postgres_socket

from echora_server.app import create_app
from echora_server.config import Config
from echora_server.storage.factory import STORAGE

ClientFactory = Callable[..., Awaitable[TestClient]]
LOCK = 4242

HOLD_INSERTS = f"""
CREATE FUNCTION hold_attachments() RETURNS trigger LANGUAGE plpgsql AS
$$ BEGIN PERFORM pg_advisory_xact_lock({LOCK}); RETURN NEW; END $$;
CREATE TRIGGER hold_attachments BEFORE INSERT ON attachments
FOR EACH ROW EXECUTE FUNCTION hold_attachments();
"""
WAITING = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"


@pytest.fixture
async def held(
    database_url: str, tmp_path: Path, aiohttp_client: ClientFactory
) -> AsyncIterator[tuple[TestClient, FaultProxy, asyncpg.Connection]]:
    """The app with PostgreSQL behind a proxy, and a direct connection holding the lock."""
    socket, dbname = postgres_socket(database_url)
    admin = await asyncpg.connect(database_url)
    try:
        async with FaultProxy(socket) as proxy:
            config = Config(
                database_url=f"postgresql://postgres@127.0.0.1:{proxy.port}/{dbname}",
                data_dir=tmp_path,
                sweep_interval=0,
            )
            client = await aiohttp_client(create_app(config))
            try:
                await admin.execute(HOLD_INSERTS)
                await admin.execute("SELECT pg_advisory_lock($1)", LOCK)
                yield client, proxy, admin
            finally:
                await client.close()
    finally:
        await admin.close()


async def until(check: Callable[[], Awaitable[Any]], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.01)


async def objects(client: TestClient) -> list[str]:
    return [info.key async for info in client.app[STORAGE].list()]


async def test_lost_before_commit_deletes_the_object_and_no_row_appears_later(
    held: tuple[TestClient, FaultProxy, asyncpg.Connection],
) -> None:
    client, proxy, admin = held
    alice = await People(client).create("alice")
    upload = asyncio.ensure_future(
        alice.request("PUT", "/api/upload?filename=a.bin", data=secrets.token_bytes(10_240))
    )
    await until(lambda: admin.fetchval(WAITING))  # the INSERT is in the server, held
    assert len(await objects(client)) == 1
    proxy.reset()  # its answer can no longer arrive
    response = await upload
    assert response.status == 503
    assert (await response.json())["error"]["code"] == "database_unavailable"
    # Released now, the held INSERT would commit a row for a deleted object: it was ended.
    await admin.execute("SELECT pg_advisory_unlock($1)", LOCK)
    await asyncio.sleep(0.2)
    assert await admin.fetchval("SELECT count(*) FROM attachments") == 0
    assert await objects(client) == []


async def test_lost_after_commit_keeps_the_object_and_answers_the_upload(
    held: tuple[TestClient, FaultProxy, asyncpg.Connection],
) -> None:
    client, proxy, admin = held
    alice = await People(client).create("alice")
    body = secrets.token_bytes(10_240)
    upload = asyncio.ensure_future(alice.request("PUT", "/api/upload?filename=a.bin", data=body))
    await until(lambda: admin.fetchval(WAITING))
    proxy.silence()  # the statement is in; nothing more passes either way
    await admin.execute("SELECT pg_advisory_unlock($1)", LOCK)
    await until(lambda: admin.fetchval("SELECT count(*) FROM attachments"))  # committed
    proxy.speak()  # the silenced connection is reset: the answer is lost
    response = await upload
    assert response.status == 201, await response.text()
    (attachment,) = (await response.json())["attachments"]
    key = await admin.fetchval(
        "SELECT storage_key FROM attachments WHERE id = $1", attachment["id"]
    )
    assert await objects(client) == [key]
    download = await alice.get(f"/api/files/{attachment['id']}/a.bin")
    assert download.status == 200 and await download.read() == body
