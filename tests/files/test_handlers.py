"""``Expect: 100-continue`` on the upload routes, on a raw socket: what the headers alone refuse
gets its final status before any ``100 Continue``, so the client never sends the body."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from support.backends import behind_proxy
from support.chat import make_channel
from support.people import People
from support.seaweed import S3Server

from echora_server.app import create_app
from echora_server.config import Config

ClientFactory = Callable[..., Awaitable[TestClient]]
LIMIT = 1000


@pytest.fixture
def config_overrides() -> dict[str, Any]:
    return {"max_upload_bytes": LIMIT, "max_files_per_upload": 2}


async def ask(client: TestClient, head: str, body: bytes = b"") -> tuple[bytes, bytes]:
    """Send ``head`` (with Expect: 100-continue), wait for what comes before the body; send
    ``body`` only after a 100. What arrived before the body, and the rest of the answer."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(head.replace("\n", "\r\n").encode() + b"\r\n")
        await writer.drain()
        async with asyncio.timeout(5):
            first = await reader.readuntil(b"\r\n\r\n")
        rest = b""
        if first.startswith(b"HTTP/1.1 100 "):
            writer.write(body)
            await writer.drain()
        async with asyncio.timeout(5):
            while not _complete(first + rest) and (chunk := await reader.read(65536)):
                rest += chunk
        return first, rest
    finally:
        writer.close()


def _complete(raw: bytes) -> bool:
    head, sep, body = raw.rpartition(b"\r\n\r\n")
    marker = b"Content-Length: "
    if not sep or marker not in head:
        return False
    length = int(head.split(marker)[-1].split(b"\r\n")[0])
    return len(body) >= length and not head.endswith(b"100 Continue")


def final(first: bytes, rest: bytes) -> tuple[int, dict[str, Any]]:
    raw = first + rest
    if raw.startswith(b"HTTP/1.1 100 "):
        raw = raw.split(b"\r\n\r\n", 1)[1]
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def upload_head(token: str | None, length: int, **headers: str) -> str:
    lines = ["PUT /api/upload?filename=a.bin HTTP/1.1", "Host: x", f"Content-Length: {length}"]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return "\n".join([*lines, "Expect: 100-continue", ""])


@pytest.mark.parametrize(
    ("who", "length", "headers", "status", "code"),
    [
        ("alice", LIMIT + 1, {}, 413, "payload_too_large"),
        (None, 10, {}, 401, "auth_required"),
        ("alice", 10, {"Content_Encoding": "gzip"}, 415, "unsupported_encoding"),
    ],
    ids=["over-the-limit", "unauthenticated", "encoded"],
)
async def test_a_refused_upload_gets_its_status_before_any_100(
    client: TestClient,
    people: People,
    who: str | None,
    length: int,
    headers: dict[str, str],
    status: int,
    code: str,
) -> None:
    alice = await people.create("alice")
    first, rest = await ask(client, upload_head(alice.token if who else None, length, **headers))
    assert not first.startswith(b"HTTP/1.1 100"), first
    assert b"100 Continue" not in first + rest
    assert final(first, rest) == (status, final(first, rest)[1])
    assert final(first, rest)[1]["error"]["code"] == code
    assert b"Connection: close" in first and b"X-Request-ID: " in first


async def test_an_acceptable_upload_gets_100_then_its_answer(
    client: TestClient, people: People
) -> None:
    alice = await people.create("alice")
    first, rest = await ask(client, upload_head(alice.token, 10), b"0123456789")
    assert first.startswith(b"HTTP/1.1 100 Continue")
    status, body = final(first, rest)
    assert status == 201 and body["attachments"][0]["size"] == 10


async def test_the_one_shot_send_refuses_before_the_body(
    client: TestClient, people: People
) -> None:
    alice = await people.create("alice")
    channel = (await make_channel(alice, "general"))["id"]
    for content_type, limit in (
        ("multipart/form-data; boundary=x", 2 * LIMIT + 1024 * 1024),
        ("application/json", 1024 * 1024),
    ):
        head = "\n".join(
            [
                f"POST /api/channels/{channel}/messages HTTP/1.1",
                "Host: x",
                f"Authorization: Bearer {alice.token}",
                f"Content-Type: {content_type}",
                f"Content-Length: {limit + 1}",
                "Expect: 100-continue",
                "",
            ]
        )
        first, rest = await ask(client, head)
        assert b"100 Continue" not in first + rest
        status, body = final(first, rest)
        assert (status, body["error"]["code"]) == (413, "payload_too_large")
        assert body["error"]["details"] == {"limit_bytes": limit}


async def test_a_store_known_to_be_down_refuses_before_the_body(
    database_url: str,
    tmp_path: Path,
    s3_server: S3Server,
    s3_config_values: dict[str, Any],
    aiohttp_client: ClientFactory,
) -> None:
    async with behind_proxy(
        database_url, tmp_path, s3_server, s3_config_values, aiohttp_client, storage_timeout=2
    ) as (proxy, client, _):
        alice = await People(client).create("alice")
        proxy.block()
        assert (await client.get("/readyz")).status == 503  # the store just failed
        first, rest = await ask(client, upload_head(alice.token, 10))
        assert b"100 Continue" not in first + rest
        status, body = final(first, rest)
        assert (status, body["error"]["code"]) == (503, "storage_unavailable")
        assert b"Retry-After: 5" in first
        proxy.unblock()
        assert (await client.get("/readyz")).status == 200  # and answered again
        first, rest = await ask(client, upload_head(alice.token, 10), b"0123456789")
        assert first.startswith(b"HTTP/1.1 100 Continue")
        assert final(first, rest)[0] == 201


def test_expect_routes_are_the_upload_routes() -> None:
    app = create_app(Config(storage="local"))
    expecting = sorted(
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None and route._expect_handler.__name__ == "handle"
    )
    assert expecting == [
        ("POST", "/api/bots/{bot_id}/files"),
        ("POST", "/api/channels/{channel_id}/messages"),
        ("POST", "/api/upload"),
        ("PUT", "/api/upload"),
    ]
