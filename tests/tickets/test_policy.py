"""Upload tickets under a workspace's policy and quotas, on both backends: the declared size
is judged and reserved before any byte, the sniffed type at the PUT and at finalize, the
rollout flags, and a reservation freed by expiry (the service's clock)."""

from __future__ import annotations

import datetime as dt
import io
import random
from typing import Any

from aiohttp.test_utils import TestClient
from PIL import Image
from support.people import People, Person
from support.tickets import ask, error_of, finalize, send, stored, ticket_for

from echora_server.db.pool import POOL
from echora_server.tickets.service import TICKETS

BACKENDS = ("local", "s3")
KiB = 1024


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


async def test_declared_size_is_judged_and_reserved_before_any_byte(
    client: TestClient, people: People
) -> None:
    olive = await people.create("olive")
    await settle(olive, max_file_size=30 * KiB, member_quota=50 * KiB)
    too_big = await error_of(await ask(olive, filename="a.bin", size=30 * KiB + 1), 413)
    assert too_big["details"] == {"limit_bytes": 30 * KiB}

    first = await ticket_for(olive, 30 * KiB)
    over = await error_of(await ask(olive, filename="b.bin", size=21 * KiB), 507)
    assert over["code"] == "quota_exceeded"
    assert over["details"] == {"quota": "member", "bytes_used": 30 * KiB, "bytes_allowed": 50 * KiB}
    # The one-step upload counts the reservation too.
    put = await olive.request("PUT", "/api/upload?filename=c.bin", data=payload(21 * KiB))
    assert (await error_of(put, 507))["details"]["bytes_used"] == 30 * KiB
    assert (await stored(client))["tickets"] == 1

    limits = await (await olive.get(f"/api/workspaces/{olive.workspace_id}/limits")).json()
    assert (limits["mine"]["bytes_reserved"], limits["mine"]["bytes_stored"]) == (30 * KiB, 0)
    assert (await send(client, first, payload(30 * KiB))).status == 200
    assert (await finalize(olive, first)).status == 201  # the reservation becomes usage
    limits = await (await olive.get(f"/api/workspaces/{olive.workspace_id}/limits")).json()
    assert (limits["mine"]["bytes_reserved"], limits["mine"]["bytes_stored"]) == (0, 30 * KiB)
    assert (await ask(olive, filename="d.bin", size=20 * KiB)).status == 201
    async with client.app[POOL].acquire() as conn:
        assert await conn.fetchval("SELECT sum(bytes) FROM upload_usage") == 30 * KiB


async def test_an_expired_ticket_frees_its_reservation(client: TestClient, people: People) -> None:
    olive = await people.create("olive")
    await settle(olive, storage_quota=40 * KiB)
    service = client.app[TICKETS]
    held = await ticket_for(olive, 40 * KiB)
    assert (await ask(olive, filename="b.bin", size=1)).status == 507
    expires_at = dt.datetime.fromisoformat(held["expires_at"])
    service.clock = lambda: expires_at + dt.timedelta(seconds=1)
    # Never sent to before its expiry: it can no longer take bytes, nor hold any.
    fresh = await ticket_for(olive, 40 * KiB)
    assert (await send(client, fresh, payload(40 * KiB))).status == 200
    assert (await finalize(olive, fresh)).status == 201


async def test_sniffed_type_at_put_and_finalize(client: TestClient, people: People) -> None:
    olive = await people.create("olive")
    await settle(olive, denied_types=["images"])
    image = png_bytes()
    ticket = await ticket_for(olive, len(image), content_type="application/octet-stream")
    refused = await error_of(await send(client, ticket, image), 415)
    assert refused["code"] == "type_not_allowed" and refused["details"]["type"] == "image/png"
    assert (await stored(client))["objects"] == []  # refused before a byte was stored

    # Received while allowed, refused at finalize once the policy changed: deleted at once.
    await settle(olive, denied_types=[])
    assert (await send(client, ticket, image)).status == 200
    await settle(olive, allowed_types=["documents"])
    late = await error_of(await finalize(olive, ticket), 415)
    assert late["code"] == "type_not_allowed"
    after = await stored(client)
    assert (after["tickets"], after["attachments"], after["objects"]) == (0, 0, [])


async def test_a_refused_type_named_or_declared_gets_no_ticket(
    client: TestClient, people: People
) -> None:
    olive = await people.create("olive")
    await settle(olive, denied_types=["video"], allowed_types=["images", "video", "documents"])
    for fields in (
        {"filename": "talk.mp4"},  # named
        {"filename": "talk.bin", "content_type": "video/mp4"},  # declared
        {"filename": "notes.zip"},  # not among the allowed
    ):
        response = await ask(olive, size=1000, **fields)
        refused = await error_of(response, 415)
        assert refused["code"] == "type_not_allowed", fields
    assert (await stored(client))["tickets"] == 0
    # Saying nothing of itself, a file is judged by its bytes when they come.
    asked = await ask(olive, filename="blob.bin", size=3, content_type="application/octet-stream")
    assert asked.status == 201, await asked.text()
    assert (await send(client, await asked.json(), b"abc")).status == 200


async def test_rollout_flags(client: TestClient, people: People) -> None:
    olive = await people.create("olive")
    await settle(olive, tickets=False)
    off = await error_of(await ask(olive, filename="a.bin", size=1), 403)
    assert off["code"] == "tickets_disabled"
    limits = await (await olive.get(f"/api/workspaces/{olive.workspace_id}/limits")).json()
    assert (limits["tickets"], limits["direct_uploads"]) == (False, False)
    await settle(olive, tickets=True, direct_uploads=False)
    ticket = await ticket_for(olive, 3)
    assert ticket["upload"]["method"] == "PUT"  # through Echora, whatever the store allows
    assert (await send(client, ticket, b"abc")).status == 200
    assert (await finalize(olive, ticket)).status == 201
