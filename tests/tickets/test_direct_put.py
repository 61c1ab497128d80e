"""Upload tickets that declare their SHA-256: a presigned PUT straight to SeaweedFS, sent by
an HTTP client as curl would, which the store verifies against the signed checksum, so
finalize reads the digest back instead of the whole object. Counted on a tap in front of the
store."""

from __future__ import annotations

import hashlib
import io
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from support.people import People
from support.seaweed import S3Server, direct_s3_client
from support.tapped import ClientFactory, tapped_app
from support.tickets import error_of, finalize, stored, ticket_for
from support.wiretap import HttpTap

from echora_server.config import CONFIG, Config
from echora_server.storage.factory import STORAGE

KiB = 1024


@pytest.fixture
async def tapped(
    request: pytest.FixtureRequest,
    database_url: str,
    tmp_path: Path,
    aiohttp_client: ClientFactory,
) -> AsyncIterator[tuple[TestClient, HttpTap]]:
    async with tapped_app(
        database_url, tmp_path, aiohttp_client, s3=request, upload_direct=True
    ) as (client, _, store):
        assert client.app[STORAGE].direct_put_problem is None  # SeaweedFS keeps checksums
        yield client, store


async def put_to_store(ticket: dict[str, Any], data: bytes, **headers: str) -> tuple[int, str]:
    """Send the bytes as the ticket says, with nothing of Echora's: no token, no cookie."""
    upload = ticket["upload"]
    async with (
        aiohttp.ClientSession() as session,
        session.put(
            upload["url"], data=io.BytesIO(data), headers={**upload["headers"], **headers}
        ) as sent,
    ):
        return sent.status, await sent.text()


async def store_keys(client: TestClient, server: S3Server) -> list[str]:
    """What the store itself lists under the test's prefix, probes included."""
    config: Config = client.app[CONFIG]
    async with direct_s3_client(server) as s3:
        found = await s3.list_objects_v2(Bucket=server.bucket, Prefix=f"{config.s3_prefix}/")
    return [item["Key"] for item in found.get("Contents", [])]


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def test_a_declared_digest_sends_the_bytes_by_a_put_the_store_verifies(
    tapped: tuple[TestClient, HttpTap], s3_server: S3Server
) -> None:
    client, store = tapped
    alice = await People(client).create("alice")
    data = random.Random(11).randbytes(3 * 1024 * KiB)
    ticket = await ticket_for(
        alice, len(data), content_type="application/zip", sha256=sha256_of(data)
    )
    upload = ticket["upload"]
    assert upload["method"] == "PUT" and upload["url"].startswith("http://127.0.0.1:")
    assert "/api/uploads/" not in upload["url"]  # the store's URL, not this server's
    assert set(upload["headers"]) == {"Content-Type", "x-amz-checksum-sha256"}
    assert ticket["token"] not in str(upload)  # the store never sees the ticket's token
    assert (await put_to_store(ticket, data))[0] == 200

    mark = store.mark()
    done = await finalize(alice, ticket)
    body = await done.json()
    assert done.status == 201, body
    [attachment] = body["attachments"]
    assert attachment["sha256"] == sha256_of(data) and attachment["size"] == len(data)
    # The first bytes by one ranged GET and the verified digest by one HEAD: the 3 MiB are
    # not read again.
    sent = store.since(mark)
    assert [r.method for r in sent] == ["GET", "HEAD"], [(r.method, r.target) for r in sent]
    assert sent[0].headers["range"].startswith("bytes=0-")
    async with alice.client.get(attachment["url"], headers=alice.auth) as download:
        assert await download.read() == data
    assert len(await store_keys(client, s3_server)) == 1


async def test_the_store_refuses_other_bytes_and_the_ticket_lives_on(
    tapped: tuple[TestClient, HttpTap], s3_server: S3Server
) -> None:
    client, _ = tapped
    alice = await People(client).create("alice")
    data = random.Random(12).randbytes(64 * KiB)
    ticket = await ticket_for(alice, len(data), sha256=sha256_of(data))
    other = random.Random(13).randbytes(len(data))  # the same length, other bytes
    for wrong, headers in (
        (other, {}),
        (data + b"more", {}),
        (data, {"Content-Type": "text/html"}),  # another type than the signed one
    ):
        status, answer = await put_to_store(ticket, wrong, **headers)
        assert 400 <= status < 500, (status, answer)
    assert await store_keys(client, s3_server) == []
    assert (await error_of(await finalize(alice, ticket), 409))["code"] == "upload_not_received"
    assert (await put_to_store(ticket, data))[0] == 200
    assert (await finalize(alice, ticket)).status == 201


async def test_an_object_with_another_digest_is_refused_at_finalize_and_deleted(
    tapped: tuple[TestClient, HttpTap], s3_server: S3Server
) -> None:
    """As a store that kept no checksum would leave it: finalize reads and compares."""
    client, _ = tapped
    alice = await People(client).create("alice")
    data = random.Random(14).randbytes(200 * KiB)
    ticket = await ticket_for(alice, len(data), sha256=sha256_of(data))
    key = ticket["upload"]["url"].partition("?")[0].split(f"/{s3_server.bucket}/", 1)[1]
    other = random.Random(15).randbytes(len(data))
    async with direct_s3_client(s3_server) as s3:
        await s3.put_object(Bucket=s3_server.bucket, Key=key, Body=other)
    error = await error_of(await finalize(alice, ticket), 422)
    assert error["code"] == "upload_digest_mismatch"
    assert error["details"] == {"stored_sha256": sha256_of(other)}
    assert await store_keys(client, s3_server) == []
    left = await stored(client)
    assert (left["tickets"], left["attachments"], left["queued"]) == (0, 0, 0)


async def test_a_page_or_an_undeclared_digest_gets_the_form(
    tapped: tuple[TestClient, HttpTap],
) -> None:
    client, _ = tapped
    alice = await People(client).create("alice")
    assert (await ticket_for(alice, 10))["upload"]["method"] == "POST"
    page = await alice.post(
        "/api/uploads",
        json={
            "filename": "a.bin",
            "size": 10,
            "workspace_id": alice.workspace_id,
            "sha256": "0" * 64,
        },
        headers={"Origin": "https://elsewhere.example"},
    )
    assert page.status == 201
    assert (await page.json())["upload"]["url"].startswith("/api/uploads/")  # through Echora
