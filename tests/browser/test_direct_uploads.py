"""The browser client sends a file straight to the store when its ticket says so: a
presigned PUT of the SHA-256 the page hashed, or the presigned form posted from the page
(cross-origin, under the page's content policy and the store's CORS rules), then finalize;
another member sees the file. The store (SeaweedFS)
sits behind a gate with CORS rules of its own (support.corsgate), which records what
reached it: the bytes went there and not through Echora."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiohttp.test_utils import TestClient
from playwright.async_api import Request
from support.browser import SIZES, Browsers, expect
from support.corsgate import CorsGate
from support.people import People
from support.seaweed import S3Server

pytestmark = [pytest.mark.browser, pytest.mark.s3]


@pytest.fixture
async def gate(s3_server: S3Server) -> AsyncIterator[CorsGate]:
    async with CorsGate(s3_server.endpoint_url, allowed=set()) as gate:
        yield gate


@pytest.fixture
def config_overrides(s3_config_values: dict[str, Any], gate: CorsGate) -> dict[str, Any]:
    return {**s3_config_values, "upload_direct": True, "s3_public_url": gate.url}


async def make_channel(person: Any) -> int:
    response = await person.post(
        "/api/channels", json={"workspace_id": person.workspace_id, "name": "general"}
    )
    assert response.status == 201, await response.text()
    return int((await response.json())["id"])


def requests_of(tab: Any, page_origin: str) -> list[str]:
    """The page's upload requests and any request it makes elsewhere, as "METHOD url"."""
    seen: list[str] = []

    def on_request(request: Request) -> None:
        url = urlsplit(request.url)
        origin = f"{url.scheme}://{url.netloc}"
        if url.path.startswith("/api/upload") or origin != page_origin:
            seen.append(f"{request.method} {origin}{url.path}")

    tab.page.on("request", on_request)
    return seen


@pytest.mark.parametrize("let_in", ["PUT", "POST", None], ids=["put", "post-only", "refused"])
async def test_a_file_goes_straight_to_the_store_when_its_cors_lets_the_page_in(
    client: TestClient, browsers: Browsers, people: People, gate: CorsGate, let_in: str | None
) -> None:
    page_origin = str(client.make_url("/")).rstrip("/")
    if let_in:
        gate.allowed.add(page_origin)
        gate.methods = {"POST", "PUT"} if let_in == "PUT" else {"POST"}
    alice, bob = await people.create("alice"), await people.create("bob")
    channel_id = await make_channel(alice)
    assert (await bob.post(f"/api/channels/{channel_id}/join")).status == 200
    tab = await browsers.tab(**SIZES["desktop"])
    sent = requests_of(tab, page_origin)
    await tab.login("alice")
    await tab.page.locator("#file-input").set_input_files(
        {"name": "plan.txt", "mimeType": "text/plain", "buffer": b"the plan, straight to S3"}
    )
    await expect(tab.page.locator(".pending-item").filter(has_text="plan.txt")).to_contain_text(
        "Uploaded"
    )
    [ask, sent_bytes, done] = sent
    assert ask == f"POST {page_origin}/api/uploads"
    assert done.startswith(f"POST {page_origin}/api/uploads/") and done.endswith("/finalize")
    if let_in:
        assert sent_bytes.startswith(f"{let_in} {gate.url}/")  # to the store
        assert [f.split()[0] for f in gate.forwarded] == [let_in]
    else:
        assert sent_bytes.startswith(f"PUT {page_origin}/api/uploads/")  # through Echora
        assert gate.forwarded == []
    # Echora asked the store whether the page may PUT (the page hashed the file), then, if
    # not, whether it may post; a page let in asks again itself.
    assert gate.preflights == [page_origin] * {"PUT": 2, "POST": 3, None: 2}[let_in]
    ticket_id = done.split("/")[-2]
    await tab.page.get_by_label("Message", exact=True).fill("the plan")
    await tab.page.keyboard.press("Enter")
    row = tab.page.locator("#message-list > li").filter(has_text="the plan")
    await expect(row.locator(".file-card")).to_contain_text("plan.txt")
    response = await bob.get(f"/api/channels/{channel_id}/messages")
    [message] = (await response.json())["messages"]
    [attachment] = message["attachments"]
    assert attachment["id"] == ticket_id and attachment["filename"] == "plan.txt"
    async with bob.client.get(attachment["url"], headers=bob.auth) as download:
        assert await download.read() == b"the plan, straight to S3"
    tab.assert_no_problems()
