"""Upload tickets as a client uses them: ask, send the bytes, finalize; and what is stored."""

from __future__ import annotations

import io
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient

from echora_server.db.pool import POOL
from echora_server.storage.factory import STORAGE
from support.people import Person


async def ask(person: Person, **fields: Any) -> aiohttp.ClientResponse:
    response: aiohttp.ClientResponse = await person.post("/api/uploads", json=fields)
    return response


async def ticket_for(person: Person, size: int, **fields: Any) -> dict[str, Any]:
    response = await ask(person, filename="notes.bin", size=size, **fields)
    body: dict[str, Any] = await response.json()
    assert response.status == 201, body
    return body


async def send(client: TestClient, ticket: dict[str, Any], data: bytes) -> aiohttp.ClientResponse:
    upload = ticket["upload"]
    response: aiohttp.ClientResponse = await client.request(
        upload["method"], upload["url"], data=data, headers=upload["headers"]
    )
    return response


async def post_form(ticket: dict[str, Any], data: bytes) -> int:
    """Send a direct ticket's form to the store as a browser would: fields, then the file."""
    upload = ticket["upload"]
    form = aiohttp.FormData()
    for name, value in upload["fields"].items():
        form.add_field(name, value)
    form.add_field(
        "file", io.BytesIO(data), filename="x", content_type=upload["fields"]["Content-Type"]
    )
    async with (
        aiohttp.ClientSession() as session,
        session.post(upload["url"], data=form, allow_redirects=False) as response,
    ):
        await response.read()
        return response.status


async def finalize(person: Person, ticket: dict[str, Any]) -> aiohttp.ClientResponse:
    response: aiohttp.ClientResponse = await person.post(
        f"/api/uploads/{ticket['id']}/finalize", json={"token": ticket["token"]}
    )
    return response


async def error_of(response: aiohttp.ClientResponse, status: int) -> dict[str, Any]:
    body = await response.json()
    assert response.status == status, body
    error: dict[str, Any] = body["error"]
    return error


async def stored(client: TestClient) -> dict[str, Any]:
    """Rows and objects as an operator would count them."""
    async with client.app[POOL].acquire() as conn:
        counts = {
            "tickets": await conn.fetchval("SELECT count(*) FROM upload_tickets"),
            "open_tickets": await conn.fetchval(
                "SELECT count(*) FROM upload_tickets WHERE finalized_at IS NULL"
            ),
            "attachments": await conn.fetchval("SELECT count(*) FROM attachments"),
            "queued": await conn.fetchval("SELECT count(*) FROM storage_deletions"),
        }
    counts["objects"] = sorted([i.key async for i in client.app[STORAGE].list()])
    return counts
