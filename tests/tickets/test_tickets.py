"""Upload tickets through Echora (POST /api/uploads, PUT the bytes, finalize), on both backends.

Every refusal is checked for what is left the way an operator would see it: ticket and
attachment rows, queued deletions, and the objects the store lists."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import random
import secrets
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from PIL import Image
from support.people import People, Person
from support.tickets import ask, error_of, finalize, send, stored, ticket_for

from echora_server.config import CONFIG
from echora_server.db.pool import POOL
from echora_server.files.cleanup import sweep_once
from echora_server.storage.factory import STORAGE
from echora_server.tickets.service import TICKETS

BACKENDS = ("local", "s3")
KiB = 1024


@pytest.fixture
def config_overrides() -> dict[str, Any]:
    return {"max_upload_bytes": 2 * 1024 * KiB, "max_open_tickets": 3}


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def png_bytes(width: int = 320, height: int = 200) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 90)).save(out, "PNG")
    return out.getvalue()


async def make_channel(client: TestClient, owner: Person, *members: Person) -> int:
    async with client.app[POOL].acquire() as conn:
        channel_id: int = await conn.fetchval(
            "INSERT INTO channels (workspace_id, name, created_by) VALUES ($1, $2, $3) "
            "RETURNING id",
            owner.workspace_id,
            f"c-{secrets.token_hex(3)}",
            owner.user_id,
        )
        for person in (owner, *members):
            await conn.execute(
                "INSERT INTO channel_members (channel_id, user_id, workspace_id) "
                "VALUES ($1, $2, $3)",
                channel_id,
                person.user_id,
                person.workspace_id,
            )
    return channel_id


async def test_the_whole_lifecycle(client: TestClient, people: People) -> None:
    alice = await people.create("alice")
    channel_id = await make_channel(client, alice)
    data = payload(300 * KiB)
    ticket = await ticket_for(alice, len(data), channel_id=channel_id, content_type="text/x-log")
    assert ticket["token"].startswith("echu_")
    assert ticket["upload"]["url"] == f"/api/uploads/{ticket['id']}"
    assert dt.datetime.fromisoformat(ticket["expires_at"]) > dt.datetime.now(dt.UTC)
    before = await stored(client)
    assert (before["open_tickets"], before["attachments"], before["objects"]) == (1, 0, [])

    sent = await send(client, ticket, data)
    receipt = await sent.json()
    assert sent.status == 200, receipt
    assert receipt == {
        "id": ticket["id"],
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    assert (await stored(client))["attachments"] == 0  # nothing visible before finalize

    done = await finalize(alice, ticket)
    body = await done.json()
    assert done.status == 201, body
    [attachment] = body["attachments"]
    assert attachment["id"] == ticket["id"]
    assert attachment["sha256"] == hashlib.sha256(data).hexdigest()
    assert attachment["size"] == len(data)
    async with alice.client.get(attachment["url"], headers=alice.auth) as download:
        assert download.status == 200
        assert await download.read() == data
    posted = await alice.post(
        f"/api/channels/{channel_id}/messages",
        json={"content": "the log", "attachment_ids": [attachment["id"]]},
    )
    assert posted.status == 201, await posted.text()
    after = await stored(client)
    assert (after["tickets"], after["open_tickets"], after["attachments"]) == (1, 0, 1)
    assert len(after["objects"]) == 1

    # The token is dead: no second finalize, no second PUT.
    assert (await error_of(await finalize(alice, ticket), 409))["code"] == "upload_finalized"
    assert (await error_of(await send(client, ticket, data), 409))["code"] == "upload_finalized"


async def test_an_image_gets_its_size_and_thumbnail(client: TestClient, people: People) -> None:
    alice = await people.create("alice")
    image = png_bytes()
    response = await ask(alice, filename="shot.png", size=len(image))
    ticket = await response.json()
    assert ticket["content_type"] == "image/png"  # from the name
    assert (await send(client, ticket, image)).status == 200
    done = await finalize(alice, ticket)
    [attachment] = (await done.json())["attachments"]
    assert (attachment["width"], attachment["height"]) == (320, 200)
    async with alice.client.get(attachment["thumbnail_url"], headers=alice.auth) as thumb:
        assert thumb.status == 200
        assert thumb.content_type == "image/webp"
    assert len((await stored(client))["objects"]) == 2


async def test_a_name_that_tells_no_type_needs_one(client: TestClient, people: People) -> None:
    alice = await people.create("alice")
    response = await ask(alice, filename="README", size=10)
    assert (await error_of(response, 422))["code"] == "content_type_required"
    response = await ask(alice, filename="README", size=10, content_type="text/plain")
    assert response.status == 201
    response = await ask(alice, filename="big.bin", size=3 * 1024 * KiB)
    error = await error_of(response, 413)
    assert error["details"]["limit_bytes"] == 2 * 1024 * KiB
    assert (await stored(client))["tickets"] == 1


async def test_the_wrong_size_stores_nothing_and_the_ticket_lives_on(
    client: TestClient, people: People
) -> None:
    alice = await people.create("alice")
    data = payload(100 * KiB, seed=1)
    ticket = await ticket_for(alice, len(data))
    for wrong in (data[:-1], data + b"x"):
        error = await error_of(await send(client, ticket, wrong), 400)
        assert error["code"] == "size_mismatch"
        now = await stored(client)
        assert (now["objects"], now["attachments"]) == ([], 0)
    assert (await error_of(await finalize(alice, ticket), 409))["code"] == "upload_not_received"
    assert (await send(client, ticket, data)).status == 200
    assert (await error_of(await send(client, ticket, data), 409))["code"] == "upload_already_sent"
    assert (await finalize(alice, ticket)).status == 201


async def test_bytes_with_another_digest_than_declared_are_refused_and_not_kept(
    client: TestClient, people: People
) -> None:
    alice = await people.create("alice")
    data = payload(300 * KiB, seed=9)
    digest = hashlib.sha256(data).hexdigest()
    ticket = await ticket_for(alice, len(data), sha256=digest)
    assert ticket["upload"]["url"] == f"/api/uploads/{ticket['id']}"  # direct uploads are off
    other = payload(len(data), seed=10)
    error = await error_of(await send(client, ticket, other), 400)
    assert error["code"] == "digest_mismatch"
    assert error["details"] == {"sent_sha256": hashlib.sha256(other).hexdigest()}
    now = await stored(client)
    assert (now["objects"], now["attachments"], now["open_tickets"]) == ([], 0, 1)
    received = await send(client, ticket, data)
    assert (await received.json())["sha256"] == digest
    [attachment] = (await (await finalize(alice, ticket)).json())["attachments"]
    assert attachment["sha256"] == digest
    for malformed in ("A" * 64, "0" * 63, digest[:-1] + "g"):
        response = await ask(alice, filename="a.bin", size=1, sha256=malformed)
        assert response.status == 422, malformed


async def test_tokens_are_bound_to_their_ticket_and_owner(
    client: TestClient, people: People
) -> None:
    alice, mallory = await people.create("alice"), await people.create("mallory")
    data = payload(10 * KiB, seed=2)
    ticket = await ticket_for(alice, len(data))
    other = await ticket_for(alice, len(data))
    # A user's own API token is no upload token.
    response = await client.put(ticket["upload"]["url"], data=data, headers=alice.auth)
    assert (await error_of(response, 401))["code"] == "invalid_upload_token"
    # Another ticket's token opens nothing.
    wrong = {**ticket, "upload": {**ticket["upload"], "headers": other["upload"]["headers"]}}
    assert (await error_of(await send(client, wrong, data), 404))["code"] == "upload_not_found"
    assert (await send(client, ticket, data)).status == 200
    # Someone else holding the token cannot finalize it: the same 404 as no ticket at all.
    assert (await error_of(await finalize(mallory, ticket), 404))["code"] == "upload_not_found"
    missing = {**ticket, "id": "A" * 22}
    assert (await error_of(await finalize(alice, missing), 404))["code"] == "upload_not_found"
    assert (await stored(client))["attachments"] == 0
    assert (await finalize(alice, ticket)).status == 201


async def test_outsiders_get_no_ticket(client: TestClient, people: People) -> None:
    alice, bob = await people.create("alice"), await people.create("bob")
    eve = await people.create("eve", workspace="other")
    channel_id = await make_channel(client, alice)
    response = await ask(bob, filename="a.txt", size=1, channel_id=channel_id)
    assert (await error_of(response, 403))["code"] == "not_channel_member"
    response = await ask(eve, filename="a.txt", size=1, channel_id=channel_id)
    assert response.status == 404
    response = await client.post("/api/uploads", json={"filename": "a.txt", "size": 1})
    assert response.status == 401
    assert (await stored(client))["tickets"] == 0


async def test_bytes_contradicting_their_type_are_refused_before_they_are_stored(
    client: TestClient, people: People
) -> None:
    alice = await people.create("alice")
    fake = b"<html><script>alert(1)</script></html>" + b" " * 100
    ticket = await ticket_for(alice, len(fake), content_type="image/png")
    assert (await error_of(await send(client, ticket, fake), 415))["code"] == "type_mismatch"
    left = await stored(client)
    assert (left["open_tickets"], left["attachments"], left["objects"], left["queued"]) == (
        1,
        0,
        [],
        0,
    )
    assert (await error_of(await finalize(alice, ticket), 409))["code"] == "upload_not_received"
    image = b"\x89PNG\r\n\x1a\n" + b"\0" * (len(fake) - 8)  # PNG magic: what it declared
    assert (await send(client, ticket, image)).status == 200


async def test_expiry_by_the_services_clock(client: TestClient, people: People) -> None:
    alice = await people.create("alice")
    service = client.app[TICKETS]
    data = payload(20 * KiB, seed=3)
    late = await ticket_for(alice, len(data))
    unfinished = await ticket_for(alice, len(data))
    assert (await send(client, unfinished, data)).status == 200
    expires_at = dt.datetime.fromisoformat(late["expires_at"])
    finalize_before = dt.datetime.fromisoformat(late["finalize_before"])
    service.clock = lambda: expires_at + dt.timedelta(seconds=1)
    assert (await error_of(await send(client, late, data), 410))["code"] == "upload_expired"
    # Nothing was sent, and nothing can be now: finalize says so too, not "not yet".
    assert (await error_of(await finalize(alice, late), 410))["code"] == "upload_expired"
    service.clock = lambda: finalize_before + dt.timedelta(seconds=1)
    assert (await error_of(await finalize(alice, unfinished), 410))["code"] == "upload_expired"
    # A new ticket works at once, at that time.
    fresh = await ticket_for(alice, len(data))
    assert (await send(client, fresh, data)).status == 200
    assert (await finalize(alice, fresh)).status == 201


async def test_open_tickets_are_limited(client: TestClient, people: People) -> None:
    alice, bob = await people.create("alice"), await people.create("bob")
    tickets = [await ticket_for(alice, 1) for _ in range(3)]
    response = await ask(alice, filename="one.bin", size=1)
    error = await error_of(response, 429)
    assert error["code"] == "too_many_tickets"
    assert error["details"] == {"limit_tickets": 3}
    assert int(response.headers["Retry-After"]) >= 1
    assert (await ask(bob, filename="one.bin", size=1)).status == 201  # per owner
    assert (await send(client, tickets[0], b"x")).status == 200
    assert (await finalize(alice, tickets[0])).status == 201
    assert (await ask(alice, filename="one.bin", size=1)).status == 201  # a place freed


async def test_abandoned_tickets_and_their_bytes_are_swept(
    client: TestClient, people: People
) -> None:
    alice = await people.create("alice")
    data = payload(50 * KiB, seed=4)
    abandoned = await ticket_for(alice, len(data))
    assert (await send(client, abandoned, data)).status == 200
    never_sent = await ticket_for(alice, len(data))
    kept = await ticket_for(alice, len(data))
    assert (await send(client, kept, data)).status == 200
    assert (await finalize(alice, kept)).status == 201
    app = client.app
    before = dt.datetime.fromisoformat(abandoned["finalize_before"])
    early = await sweep_once(app[POOL], app[STORAGE], app[CONFIG], before - dt.timedelta(seconds=1))
    assert early.expired_upload_tickets == 0
    assert len((await stored(client))["objects"]) == 2
    result = await sweep_once(
        app[POOL], app[STORAGE], app[CONFIG], before + dt.timedelta(seconds=1)
    )
    assert result.expired_upload_tickets == 2, result
    left = await stored(client)
    assert (left["tickets"], left["attachments"], left["queued"]) == (0, 1, 0)
    assert len(left["objects"]) == 1  # the finalized one's, now its attachment's
    assert (await error_of(await finalize(alice, never_sent), 404))["code"] == "upload_not_found"
