"""Direct-to-S3 uploads from web pages: a page (a request with an Origin header) is given
the store's form only when the store's CORS rules let its origin post; else its bytes go
through Echora. The page's content policy names the store. The store sits behind a gate
with CORS rules of its own (support.corsgate), as behind a self-hoster's proxy."""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from support.corsgate import CorsGate
from support.people import People
from support.processes import echora_env, run_echora
from support.seaweed import S3Server
from support.tickets import finalize, post_form, send

from echora_server.storage.factory import STORAGE

KiB = 1024
PAGE = "http://chat.example.test"
ELSEWHERE = "http://elsewhere.example.test"


@pytest.fixture
async def gate(s3_server: S3Server) -> AsyncIterator[CorsGate]:
    async with CorsGate(s3_server.endpoint_url, allowed={PAGE}) as gate:
        yield gate


@pytest.fixture
def config_overrides(s3_config_values: dict[str, Any], gate: CorsGate) -> dict[str, Any]:
    return {
        **s3_config_values,
        "upload_direct": True,
        "s3_public_url": gate.url,
        # Pages this server serves (its own origin counts too): only theirs are asked about.
        "allowed_origins": [PAGE, ELSEWHERE],
    }


async def ask_from(
    person: Any, origin: str | None, size: int, sha256: str | None = None
) -> dict[str, Any]:
    headers = {"Origin": origin} if origin else {}
    fields: dict[str, Any] = {"filename": "notes.bin", "size": size}
    if sha256:
        fields["sha256"] = sha256
    response = await person.post("/api/uploads", json=fields, headers=headers)
    body: dict[str, Any] = await response.json()
    assert response.status == 201, body
    return body


async def test_a_page_whose_origin_the_store_lets_in_sends_straight_to_it(
    client: TestClient, people: People, gate: CorsGate
) -> None:
    assert client.app[STORAGE].direct_upload_origin == gate.url
    alice = await people.create("alice")
    data = random.Random(1).randbytes(40 * KiB)
    first = await ask_from(alice, PAGE, len(data))
    assert first["upload"]["method"] == "POST"
    assert first["upload"]["url"].startswith(gate.url + "/")
    assert await post_form(first, data) in (200, 201, 204)
    assert (await finalize(alice, first)).status == 201
    second = await ask_from(alice, PAGE, len(data))
    assert second["upload"]["method"] == "POST"
    assert gate.preflights == [PAGE]  # the store's answer is kept, not asked per ticket


async def test_a_page_with_a_declared_digest_puts_straight_to_the_store(
    client: TestClient, people: People, gate: CorsGate
) -> None:
    alice = await people.create("alice")
    data = random.Random(3).randbytes(40 * KiB)
    digest = hashlib.sha256(data).hexdigest()
    ticket = await ask_from(alice, PAGE, len(data), digest)
    upload = ticket["upload"]
    assert upload["method"] == "PUT" and upload["url"].startswith(gate.url + "/")
    assert set(upload["headers"]) == {"Content-Type", "x-amz-checksum-sha256"}
    async with (
        aiohttp.ClientSession() as session,
        session.put(
            upload["url"], data=data, headers={**upload["headers"], "Origin": PAGE}
        ) as sent,
    ):
        assert sent.status == 200, await sent.text()
        assert sent.headers["Access-Control-Allow-Origin"] == PAGE  # the page reads it
    done = await finalize(alice, ticket)
    body = await done.json()
    assert done.status == 201, body
    assert body["attachments"][0]["sha256"] == digest
    assert gate.preflights == [PAGE]  # asked once whether it may PUT
    # Without a digest the page gets the form (asked once more: may it post).
    assert (await ask_from(alice, PAGE, len(data)))["upload"]["method"] == "POST"
    assert gate.preflights == [PAGE, PAGE]


async def test_a_page_the_store_lets_post_but_not_put_gets_the_form(
    client: TestClient, people: People, gate: CorsGate
) -> None:
    gate.methods.discard("PUT")
    alice = await people.create("alice")
    ticket = await ask_from(alice, PAGE, 3, hashlib.sha256(b"abc").hexdigest())
    assert ticket["upload"]["method"] == "POST"
    assert await post_form(ticket, b"abc") in (200, 201, 204)
    done = await finalize(alice, ticket)
    assert done.status == 201, await done.text()


async def test_a_page_the_store_keeps_out_sends_through_echora(
    client: TestClient, people: People, gate: CorsGate
) -> None:
    alice = await people.create("alice")
    data = random.Random(2).randbytes(40 * KiB)
    ticket = await ask_from(alice, ELSEWHERE, len(data))
    assert ticket["upload"]["method"] == "PUT"
    assert ticket["upload"]["url"] == f"/api/uploads/{ticket['id']}"
    assert (await send(client, ticket, data)).status == 200
    done = await finalize(alice, ticket)
    assert done.status == 201, await done.text()
    assert gate.preflights == [ELSEWHERE]
    assert gate.forwarded == []  # not a byte went to the store from outside
    # A client that is no page (no Origin: curl, an agent) is not held to CORS.
    assert (await ask_from(alice, None, len(data)))["upload"]["method"] == "POST"


async def test_a_page_of_an_origin_this_server_does_not_serve_is_never_asked_about(
    client: TestClient, people: People, gate: CorsGate
) -> None:
    """However many origins a client makes up, the store is asked about none of them."""
    alice = await people.create("alice")
    for n in range(3):
        ticket = await ask_from(alice, f"http://made-up-{n}.example.test", 1024)
        assert ticket["upload"]["method"] == "PUT"
    assert gate.preflights == []


async def test_pages_asking_at_once_make_one_question_to_the_store(
    client: TestClient, people: People, gate: CorsGate
) -> None:
    alice = await people.create("alice")
    tickets = await asyncio.gather(*(ask_from(alice, PAGE, 1024) for _ in range(5)))
    assert [t["upload"]["method"] for t in tickets] == ["POST"] * 5
    assert gate.preflights == [PAGE]


async def test_the_page_may_connect_to_the_store_and_nowhere_else(
    client: TestClient, gate: CorsGate
) -> None:
    for path in ("/", "/static/js/main.js"):
        policy = (await client.get(path)).headers["Content-Security-Policy"]
        assert f"connect-src 'self' {gate.url};" in policy, policy


@pytest.mark.parametrize("let_in", [True, False], ids=["cors-allows", "cors-refuses"])
async def test_check_config_says_whether_pages_of_the_public_origin_upload_straight(
    database_url: str, s3_config_values: dict[str, Any], gate: CorsGate, let_in: bool
) -> None:
    public = "https://chat.example.test"
    if let_in:
        gate.allowed.add(public)
    env = echora_env(
        ECHORA_DATABASE_URL=database_url,
        ECHORA_PUBLIC_URL=f"{public}/",
        ECHORA_UPLOAD_DIRECT="true",
        ECHORA_S3_PUBLIC_URL=gate.url,
        **{f"ECHORA_{name.upper()}": str(value) for name, value in s3_config_values.items()},
    )
    # The gate serves on this loop: the command runs in a thread meanwhile.
    done = await asyncio.to_thread(run_echora, "check-config", "--connect", env=env)
    assert done.returncode == 0, done.stderr
    assert f"direct uploads: on, to {gate.url}" in done.stderr
    assert "direct PUTs of a declared SHA-256: on" in done.stderr
    verdict = "on" if let_in else "off: the store's CORS rules do not let that origin post"
    assert f"direct uploads from pages of {public}: {verdict}" in done.stderr
    verdict = "on" if let_in else "off: the store's CORS rules do not let that origin PUT"
    assert f"direct PUTs from pages of {public}: {verdict}" in done.stderr
    assert gate.preflights == [public, public]  # may it PUT, may it post
