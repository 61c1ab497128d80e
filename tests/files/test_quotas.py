"""A workspace's upload policy and exact quotas on the one-step upload and the one-shot send,
on both backends: 413, 415 and 507 with their details, nothing left behind by a refusal, the
quota race, and bytes freed when a message goes."""

from __future__ import annotations

import asyncio
import io
import random
import secrets
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from PIL import Image
from support.people import People, Person

from echora_server.db.pool import POOL
from echora_server.storage.factory import STORAGE

BACKENDS = ("local", "s3")
KiB = 1024


@pytest.fixture
def config_overrides() -> dict[str, Any]:
    return {"max_upload_bytes": 256 * KiB, "db_pool_max": 20}


def payload(size: int) -> bytes:
    return random.Random(size).randbytes(size)


def png_bytes() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(out, "PNG")
    return out.getvalue()


async def settle(owner: Person, **settings: Any) -> None:
    response = await owner.request(
        "PATCH", f"/api/workspaces/{owner.workspace_id}/settings", json=settings
    )
    assert response.status == 200, await response.text()


async def put(person: Person, data: bytes, name: str = "notes.bin") -> aiohttp.ClientResponse:
    response: aiohttp.ClientResponse = await person.request(
        "PUT", f"/api/upload?filename={name}", data=data
    )
    return response


async def error_of(response: aiohttp.ClientResponse, status: int) -> dict[str, Any]:
    body = await response.json()
    assert response.status == status, body
    error: dict[str, Any] = body["error"]
    return error


async def state(client: TestClient) -> dict[str, Any]:
    """Rows, usage and objects as an operator would count them."""
    async with client.app[POOL].acquire() as conn:
        found = {
            "attachments": await conn.fetchval("SELECT count(*) FROM attachments"),
            "sizes": await conn.fetchval("SELECT coalesce(sum(size), 0) FROM attachments"),
            "usage": await conn.fetchval("SELECT coalesce(sum(bytes), 0) FROM upload_usage"),
            "keys": {
                k
                for r in await conn.fetch("SELECT storage_key, thumbnail_key FROM attachments")
                for k in r
                if k
            },
        }
    found["objects"] = {i.key async for i in client.app[STORAGE].list()}
    return found


async def make_channel(client: TestClient, owner: Person) -> int:
    async with client.app[POOL].acquire() as conn:
        channel_id: int = await conn.fetchval(
            "INSERT INTO channels (workspace_id, name, created_by) VALUES ($1, $2, $3) "
            "RETURNING id",
            owner.workspace_id,
            f"c-{secrets.token_hex(3)}",
            owner.user_id,
        )
        await conn.execute(
            "INSERT INTO channel_members (channel_id, user_id, workspace_id) VALUES ($1, $2, $3)",
            channel_id,
            owner.user_id,
            owner.workspace_id,
        )
    return channel_id


async def test_size_and_type_policy(client: TestClient, people: People) -> None:
    olive = await people.create("olive")
    await settle(olive, max_file_size=10 * KiB, denied_types=["images", "application/zip"])
    too_big = await error_of(await put(olive, payload(10 * KiB + 1)), 413)
    assert too_big["code"] == "file_too_large"
    assert too_big["details"]["limit_bytes"] == 10 * KiB
    assert (await put(olive, payload(10 * KiB))).status == 201  # exactly the limit

    refused = await error_of(await put(olive, png_bytes(), "dot.png"), 415)
    assert refused["code"] == "type_not_allowed"
    assert refused["details"] == {"type": "image/png", "filename": "dot.png"}
    # Named as text, sniffed as an image: the bytes decide.
    renamed = await error_of(await put(olive, png_bytes(), "dot.txt"), 415)
    assert renamed["details"]["type"] == "image/png"

    await settle(olive, denied_types=[], allowed_types=["documents"])
    assert (await put(olive, b"plain words\n", "a.txt")).status == 201
    unknown = await error_of(await put(olive, b"\x00\x01\x02\x03", "blob.bin"), 415)
    assert unknown["details"]["type"] == "application/octet-stream"
    after = await state(client)
    assert after["attachments"] == 2 and after["objects"] == after["keys"]


async def test_quota_refusal_leaves_nothing(client: TestClient, people: People) -> None:
    olive = await people.create("olive")
    mia = await people.create("mia")
    await settle(olive, member_quota=20 * KiB)
    assert (await put(mia, payload(15 * KiB))).status == 201
    refused = await error_of(await put(mia, payload(6 * KiB)), 507)
    assert refused["code"] == "quota_exceeded"
    assert refused["details"] == {
        "quota": "member",
        "bytes_used": 15 * KiB,
        "bytes_allowed": 20 * KiB,
    }
    assert (await put(olive, payload(6 * KiB))).status == 201  # per member
    after = await state(client)
    assert after["attachments"] == 2 and after["objects"] == after["keys"]
    assert after["usage"] == after["sizes"] == 21 * KiB

    limits = await (await mia.get(f"/api/workspaces/{mia.workspace_id}/limits")).json()
    assert limits["mine"] == {
        "bytes_stored": 15 * KiB,
        "bytes_reserved": 0,
        "bytes_used": 15 * KiB,
        "bytes_allowed": 20 * KiB,
        "quota": "member",
    }
    assert limits["workspace"]["bytes_stored"] == 21 * KiB


async def test_bots_have_their_own_quota(client: TestClient, people: People) -> None:
    olive = await people.create("olive")
    robo = await people.create("robo", role="bot")
    await settle(olive, bot_quota=4 * KiB, member_quota=100 * KiB)
    refused = await error_of(await put(robo, payload(5 * KiB)), 507)
    assert refused["details"]["quota"] == "bot"
    assert (await put(olive, payload(5 * KiB))).status == 201


async def test_the_quota_race(client: TestClient, people: People) -> None:
    """Twenty concurrent uploads that together exceed the quota by one file: one refusal."""
    olive = await people.create("olive")
    size = 8 * KiB
    await settle(olive, storage_quota=19 * size)
    responses = await asyncio.gather(
        *(put(olive, secrets.token_bytes(size), f"f{i}.bin") for i in range(20))
    )
    statuses = sorted(r.status for r in responses)
    assert statuses == [201] * 19 + [507], statuses
    after = await state(client)
    assert after["attachments"] == 19
    assert after["usage"] == after["sizes"] == 19 * size
    assert after["objects"] == after["keys"]  # nothing stored for the refused one


async def test_deleting_a_message_frees_its_bytes(client: TestClient, people: People) -> None:
    olive = await people.create("olive")
    channel_id = await make_channel(client, olive)
    await settle(olive, storage_quota=30 * KiB)
    form = aiohttp.FormData()
    form.add_field("content", "two files")
    for i in range(2):
        form.add_field("file", payload(12 * KiB + i), filename=f"f{i}.bin")
    posted = await olive.post(f"/api/channels/{channel_id}/messages", data=form)
    assert posted.status == 201, await posted.text()
    message_id = (await posted.json())["id"]

    # The one-shot send obeys the quota too: nothing of it stays.
    form = aiohttp.FormData()
    form.add_field("content", "one more")
    form.add_field("file", payload(7 * KiB), filename="more.bin")
    over = await olive.post(f"/api/channels/{channel_id}/messages", data=form)
    assert (await error_of(over, 507))["details"]["bytes_used"] == 24 * KiB + 1
    async with client.app[POOL].acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM messages") == 1

    assert (await olive.delete(f"/api/messages/{message_id}")).status == 204
    after = await state(client)
    assert after["usage"] == after["sizes"] == 0
    assert (await put(olive, payload(29 * KiB))).status == 201
