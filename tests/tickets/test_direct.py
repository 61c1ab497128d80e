"""Upload tickets straight to S3: real presigned POSTs sent to SeaweedFS by an HTTP client,
then finalize's checks of what the store kept."""

from __future__ import annotations

import datetime as dt
import hashlib
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from support.people import People
from support.seaweed import S3Server, direct_s3_client
from support.tickets import error_of, finalize, post_form, stored, ticket_for

from echora_server.config import Config
from echora_server.db.pool import POOL
from echora_server.files.cleanup import sweep_once
from echora_server.storage.factory import STORAGE

KiB = 1024


@pytest.fixture
def config_overrides(s3_config_values: dict[str, Any]) -> dict[str, Any]:
    return {**s3_config_values, "upload_direct": True, "max_upload_bytes": 4 * 1024 * KiB}


async def store_keys(server: S3Server, config: Config) -> list[str]:
    """What the store itself lists under the test's prefix, probes included."""
    async with direct_s3_client(server) as s3:
        found = await s3.list_objects_v2(Bucket=server.bucket, Prefix=f"{config.s3_prefix}/")
    return [item["Key"] for item in found.get("Contents", [])]


@pytest.fixture
async def probed(client: TestClient) -> AsyncIterator[None]:
    assert client.app[STORAGE].direct_upload_problem is None  # SeaweedFS keeps the policy
    yield


async def test_bytes_go_straight_to_the_store(
    client: TestClient, people: People, probed: None, s3_server: S3Server, config: Config
) -> None:
    alice = await people.create("alice")
    data = random.Random(5).randbytes(700 * KiB)
    ticket = await ticket_for(alice, len(data), content_type="application/pdf")
    upload = ticket["upload"]
    assert upload["method"] == "POST"
    assert upload["url"].startswith(s3_server.endpoint_url)
    assert upload["fields"]["Content-Type"] == "application/pdf"
    assert ticket["token"] not in str(upload)  # the store never sees the ticket's token
    # The policy names exactly this object: no other key, no other type.
    assert upload["fields"]["key"].startswith(f"{config.s3_prefix}/files/{alice.workspace_id}/")
    assert await post_form(ticket, data) in (200, 201, 204)
    done = await finalize(alice, ticket)
    body = await done.json()
    assert done.status == 201, body
    [attachment] = body["attachments"]
    assert attachment["sha256"] == hashlib.sha256(data).hexdigest()  # read back once
    async with alice.client.get(attachment["url"], headers=alice.auth) as download:
        assert await download.read() == data
    assert len(await store_keys(s3_server, config)) == 1  # the probe left nothing
    # A PUT to the server is not this ticket's way.
    response = await client.put(
        f"/api/uploads/{ticket['id']}",
        data=data,
        headers={"Authorization": f"Bearer {ticket['token']}"},
    )
    assert (await error_of(response, 409))["code"] == "upload_finalized"


async def test_the_store_refuses_a_body_longer_than_declared(
    client: TestClient, people: People, probed: None, s3_server: S3Server, config: Config
) -> None:
    alice = await people.create("alice")
    data = random.Random(6).randbytes(64 * KiB)
    ticket = await ticket_for(alice, len(data))
    status = await post_form(ticket, data + b"more")
    assert not 200 <= status < 300, status
    assert await store_keys(s3_server, config) == []
    assert (await error_of(await finalize(alice, ticket), 409))["code"] == "upload_not_received"
    # The ticket lives on: the right bytes are taken.
    assert await post_form(ticket, data) in (200, 201, 204)
    assert (await finalize(alice, ticket)).status == 201


async def test_an_object_of_another_size_is_refused_at_finalize_and_deleted(
    client: TestClient, people: People, probed: None, s3_server: S3Server, config: Config
) -> None:
    """As a store that ignores the length range would keep it: finalize's HEAD decides."""
    alice = await people.create("alice")
    ticket = await ticket_for(alice, 10 * KiB)
    key = ticket["upload"]["fields"]["key"]
    async with direct_s3_client(s3_server) as s3:
        await s3.put_object(Bucket=s3_server.bucket, Key=key, Body=b"x" * (20 * KiB))
    error = await error_of(await finalize(alice, ticket), 422)
    assert error["code"] == "upload_size_mismatch"
    assert error["details"] == {"declared_bytes": 10 * KiB, "stored_bytes": 20 * KiB}
    assert await store_keys(s3_server, config) == []
    left = await stored(client)
    assert (left["tickets"], left["attachments"], left["queued"]) == (0, 0, 0)


async def test_bytes_contradicting_their_type_are_refused_at_finalize_and_deleted(
    client: TestClient, people: People, probed: None, s3_server: S3Server, config: Config
) -> None:
    alice = await people.create("alice")
    fake = b"<html><script>alert(1)</script></html>" + b" " * 100
    ticket = await ticket_for(alice, len(fake), content_type="image/png")
    assert await post_form(ticket, fake) in (200, 201, 204)
    assert len(await store_keys(s3_server, config)) == 1
    error = await error_of(await finalize(alice, ticket), 415)
    assert error["code"] == "type_mismatch"
    assert await store_keys(s3_server, config) == []
    left = await stored(client)
    assert (left["tickets"], left["attachments"], left["queued"]) == (0, 0, 0)
    assert (await error_of(await finalize(alice, ticket), 404))["code"] == "upload_not_found"


@pytest.mark.parametrize("size", [3 * KiB, 96 * KiB], ids=["written-again", "copied"])
async def test_a_form_posted_again_after_finalize_changes_nothing_kept(
    client: TestClient,
    people: People,
    probed: None,
    s3_server: S3Server,
    config: Config,
    size: int,
) -> None:
    """The form's policy lives until it expires: the attachment keeps its bytes at a key no
    presigned request names, written again from the bytes finalize read (a small object)
    or copied by the store before finalize reads it."""
    alice = await people.create("alice")
    data = random.Random(8).randbytes(size)
    ticket = await ticket_for(alice, len(data), content_type="application/pdf")
    form_key = ticket["upload"]["fields"]["key"]
    assert await post_form(ticket, data) in (200, 201, 204)
    [attachment] = (await (await finalize(alice, ticket)).json())["attachments"]
    assert await store_keys(s3_server, config) != [form_key]  # the copy, the form's deleted
    assert len(await store_keys(s3_server, config)) == 1

    other = random.Random(9).randbytes(len(data))  # the same size and type, other bytes
    assert await post_form(ticket, other) in (200, 201, 204)
    async with alice.client.get(attachment["url"], headers=alice.auth) as download:
        assert await download.read() == data
    assert attachment["sha256"] == hashlib.sha256(data).hexdigest()
    assert form_key in await store_keys(s3_server, config)
    # What the form put there now is claimed by nothing: the orphan sweep takes it.
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=config.orphan_grace + 60)
    swept = await sweep_once(client.app[POOL], client.app[STORAGE], config, later)
    assert swept.orphan_objects == 1, swept
    assert len(await store_keys(s3_server, config)) == 1
    assert form_key not in await store_keys(s3_server, config)
    async with alice.client.get(attachment["url"], headers=alice.auth) as download:
        assert await download.read() == data


async def test_a_big_object_is_read_once_for_its_digest(
    client: TestClient, people: People, probed: None
) -> None:
    alice = await people.create("alice")
    data = random.Random(7).randbytes(3 * 1024 * KiB)
    ticket = await ticket_for(alice, len(data), content_type="application/zip")
    assert await post_form(ticket, data) in (200, 201, 204)
    [attachment] = (await (await finalize(alice, ticket)).json())["attachments"]
    assert attachment["sha256"] == hashlib.sha256(data).hexdigest()


async def test_a_workspace_may_keep_its_bytes_coming_through_echora(
    client: TestClient, people: People, probed: None
) -> None:
    alice = await people.create("alice")
    path = f"/api/workspaces/{alice.workspace_id}/limits"
    assert (await (await alice.get(path)).json())["direct_uploads"] is True
    changed = await alice.request(
        "PATCH", f"/api/workspaces/{alice.workspace_id}/settings", json={"direct_uploads": False}
    )
    assert changed.status == 200
    assert (await (await alice.get(path)).json())["direct_uploads"] is False
    ticket = await ticket_for(alice, 3)
    assert ticket["upload"]["method"] == "PUT"  # the store would take it; the workspace says no
    assert (await finalize(alice, ticket)).status == 409  # nothing sent yet
