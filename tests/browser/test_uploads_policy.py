"""The client knows the workspace's upload limits before sending a byte, and uploads by
ticket (ask, PUT, finalize) when the workspace has tickets on, else in one step.

What the page asked for is read from its own requests (Playwright's "request" event), so
"nothing was sent" means no request to /api/upload or /api/uploads at all. Expired tickets
and failed uploads are provoked by route interception answering in the server's place;
everything else is the real server. Both window sizes run every test.

Direct-to-S3 uploads (a presigned POST from the page to the store) are not driven here: the
test store (SeaweedFS) would have to be reachable by the page with CORS on its bucket, and
the page's content policy lets it connect to its own origin only; tests/tickets/test_direct.py
sends those forms with an HTTP client.
"""

from __future__ import annotations

import shutil
from typing import Any
from urllib.parse import urlsplit

from aiohttp import WSCloseCode
from aiohttp.test_utils import TestClient
from playwright.async_api import Page, Request, Route
from support.browser import SIZES, Browsers, expect, open_tab
from support.people import People, Person

from echora_server.config import Config
from echora_server.realtime.hub import HUB
from echora_server.storage.local.tempfile import TEMP_DIR

EXPIRED = {"error": {"code": "upload_expired", "message": "The upload ticket has expired."}}


async def make_channel(person: Person, name: str = "general") -> int:
    response = await person.post(
        "/api/channels", json={"workspace_id": person.workspace_id, "name": name}
    )
    assert response.status == 201, await response.text()
    return int((await response.json())["id"])


async def change_settings(admin: Person, **settings: Any) -> None:
    response = await admin.request(
        "PATCH", f"/api/workspaces/{admin.workspace_id}/settings", json=settings
    )
    assert response.status == 200, await response.text()


async def history(person: Person, channel_id: int) -> list[dict[str, Any]]:
    """Oldest first."""
    response = await person.get(f"/api/channels/{channel_id}/messages")
    assert response.status == 200, await response.text()
    return list(reversed((await response.json())["messages"]))


def upload_requests(page: Page) -> list[str]:
    """Every upload request the page makes, as "METHOD /path" with ids as {id}."""
    seen: list[str] = []

    def on_request(request: Request) -> None:
        path = urlsplit(request.url).path
        if not path.startswith("/api/upload"):
            return
        parts = path.split("/")
        if len(parts) > 3:
            parts[3] = "{id}"
        seen.append(f"{request.method} {'/'.join(parts)}")

    page.on("request", on_request)
    return seen


def pending(page: Page, name: str) -> Any:
    return page.locator(".pending-item").filter(has_text=name)


def attach(page: Page, name: str, mime: str, data: bytes) -> Any:
    return page.locator("#file-input").set_input_files(
        {"name": name, "mimeType": mime, "buffer": data}
    )


TICKET_FLOW = ["POST /api/uploads", "PUT /api/uploads/{id}", "POST /api/uploads/{id}/finalize"]


async def test_oversize_and_refused_types_are_refused_on_their_cards_before_a_byte(
    browsers: Browsers, people: People, size: str
) -> None:
    admin = await people.create("alice", role="admin")
    await make_channel(admin)
    await change_settings(admin, max_file_size=1000, denied_types=["archives"])
    tab = await open_tab(browsers, size, "alice")
    page = tab.page
    sent = upload_requests(page)

    await attach(page, "big.bin", "application/octet-stream", bytes(1001))
    big = pending(page, "big.bin")
    await expect(big.get_by_role("alert")).to_have_text("Too large: files may be at most 1000 B.")
    # A refused type, by its declared type and, with none, by its extension.
    await attach(page, "pack.zip", "application/zip", b"PK\x03\x04 small")
    await attach(page, "bundle.tar", "", b"small")
    for name, kind in (("pack.zip", "application/zip"), ("bundle.tar", "application/x-tar")):
        await expect(pending(page, name).get_by_role("alert")).to_have_text(
            f"File type refused: this workspace does not accept {kind} files."
        )
    for name in ("big.bin", "pack.zip", "bundle.tar"):
        card = pending(page, name)
        await expect(card.get_by_role("progressbar")).to_be_hidden()
        await expect(card.get_by_role("button", name=f"Retry upload of {name}")).to_be_hidden()
    await expect(page.get_by_role("button", name="Send")).to_be_disabled()
    assert sent == []  # not one request for any of them

    # A file within the limits goes (so the watcher above would have seen the others).
    await attach(page, "ok.txt", "text/plain", b"x" * 1000)
    await expect(pending(page, "ok.txt")).to_contain_text("Uploaded")
    assert sent == TICKET_FLOW
    tab.assert_no_problems()


async def test_a_quota_refusal_shows_the_figures_and_sends_no_bytes(
    browsers: Browsers, people: People, size: str
) -> None:
    admin = await people.create("alice", role="admin")
    await make_channel(admin)
    await change_settings(admin, member_quota=100)
    tab = await open_tab(browsers, size, "alice")
    page = tab.page
    sent = upload_requests(page)

    await attach(page, "notes.txt", "text/plain", b"n" * 101)
    await expect(pending(page, "notes.txt").get_by_role("alert")).to_have_text(
        "Your storage quota is full: 0 B of 100 B used."
    )
    assert sent == ["POST /api/uploads"]  # refused when asked: no byte went
    tab.assert_no_problems()


async def test_with_tickets_on_a_file_is_asked_put_and_finalized_then_seen_by_another(
    browsers: Browsers, people: People, size: str
) -> None:
    alice, bob = await people.create("alice"), await people.create("bob")
    channel_id = await make_channel(alice)
    assert (await bob.post(f"/api/channels/{channel_id}/join")).status == 200
    tab_a = await open_tab(browsers, size, "alice")
    tab_b = await open_tab(browsers, size, "bob")
    page = tab_a.page
    sent = upload_requests(page)

    await attach(page, "report.txt", "text/plain", b"the quarterly report")
    await expect(pending(page, "report.txt")).to_contain_text("Uploaded")
    assert sent == TICKET_FLOW
    await page.get_by_label("Message", exact=True).fill("by ticket")
    await page.keyboard.press("Enter")
    row = tab_b.page.locator("#message-list > li").filter(has_text="by ticket")
    await expect(row.locator(".file-card")).to_contain_text("report.txt")
    [stored] = await history(bob, channel_id)
    assert [a["filename"] for a in stored["attachments"]] == ["report.txt"]
    assert sent == TICKET_FLOW  # and never the one-step upload
    tab_a.assert_no_problems()
    tab_b.assert_no_problems()


async def test_with_tickets_off_the_one_step_upload_is_used(
    browsers: Browsers, people: People, size: str
) -> None:
    admin = await people.create("alice", role="admin")
    channel_id = await make_channel(admin)
    await change_settings(admin, tickets=False)
    tab = await open_tab(browsers, size, "alice")
    page = tab.page
    sent = upload_requests(page)

    await attach(page, "plain.txt", "text/plain", b"one request")
    await expect(pending(page, "plain.txt")).to_contain_text("Uploaded")
    await page.keyboard.press("Enter")
    await expect(page.locator("#message-list .file-card")).to_contain_text("plain.txt")
    assert sent == ["POST /api/upload"]
    [stored] = await history(admin, channel_id)
    assert [a["filename"] for a in stored["attachments"]] == ["plain.txt"]
    tab.assert_no_problems()


async def test_tickets_turned_off_after_the_limits_were_read_fall_back_to_one_step(
    browsers: Browsers, people: People, size: str
) -> None:
    admin = await people.create("alice", role="admin")
    await make_channel(admin)
    tab = await open_tab(browsers, size, "alice")
    page = tab.page
    sent = upload_requests(page)
    await change_settings(admin, tickets=False)

    await attach(page, "late.txt", "text/plain", b"settings changed under me")
    await expect(pending(page, "late.txt")).to_contain_text("Uploaded")
    assert sent == ["POST /api/uploads", "POST /api/upload"]
    tab.assert_no_problems()


async def test_an_expired_ticket_is_replaced_once_then_retry_works(
    browsers: Browsers, people: People, size: str
) -> None:
    alice = await people.create("alice")
    channel_id = await make_channel(alice)
    tab = await open_tab(browsers, size, "alice")
    page = tab.page
    sent = upload_requests(page)
    expire_next = 1

    async def expire(route: Route) -> None:
        nonlocal expire_next
        if route.request.method == "PUT" and expire_next > 0:
            expire_next -= 1
            await route.fulfill(status=410, json=EXPIRED)
        else:
            await route.continue_()

    await page.route("**/api/uploads/*", expire)

    # One expiry: a new ticket, the bytes again, finalized.
    await attach(page, "first.txt", "text/plain", b"sent twice")
    await expect(pending(page, "first.txt")).to_contain_text("Uploaded")
    assert sent == [*TICKET_FLOW[:2], *TICKET_FLOW]

    # Two in a row: no third ticket; the card says so and offers Retry.
    sent.clear()
    expire_next = 2
    await attach(page, "second.txt", "text/plain", b"expired twice")
    card = pending(page, "second.txt")
    await expect(card.get_by_role("alert")).to_have_text(
        "The upload took too long and its ticket expired; try again."
    )
    assert sent == [*TICKET_FLOW[:2], *TICKET_FLOW[:2]]
    await expect(page.get_by_role("button", name="Send")).to_be_disabled()
    sent.clear()
    await card.get_by_role("button", name="Retry upload of second.txt").click()
    await expect(card).to_contain_text("Uploaded")
    await expect(card.get_by_role("button", name="Retry upload of second.txt")).to_be_hidden()
    assert sent == TICKET_FLOW
    await page.get_by_role("button", name="Send").click()
    await expect(page.locator("#message-list .file-card")).to_have_count(2)
    [stored] = await history(alice, channel_id)
    assert [a["filename"] for a in stored["attachments"]] == ["first.txt", "second.txt"]
    tab.assert_no_problems()


async def test_uploads_that_failed_for_the_store_go_again_after_reconnecting(
    client: TestClient, config: Config, browsers: Browsers, people: People, size: str
) -> None:
    alice = await people.create("alice")
    channel_id = await make_channel(alice)
    tab = await open_tab(browsers, size, "alice")
    page = tab.page
    # A real fault: the local store's temp directory turned into a file (see test_client).
    temp_dir = config.files_dir / TEMP_DIR
    shutil.rmtree(temp_dir)
    temp_dir.write_bytes(b"")
    await attach(page, "minutes.txt", "text/plain", b"kept for later")
    card = pending(page, "minutes.txt")
    await expect(card.get_by_role("alert")).to_have_text(
        "File storage is unavailable right now; try again shortly."
    )
    await expect(card.get_by_role("button", name="Retry upload of minutes.txt")).to_be_visible()

    temp_dir.unlink()
    temp_dir.mkdir()
    await expect(card.get_by_role("alert")).to_be_visible()  # nothing retries it yet
    await client.app[HUB].close_all(WSCloseCode.GOING_AWAY, "test drops every socket")
    await expect(page.locator("#connection")).not_to_have_attribute("data-state", "open")
    await expect(page.locator("#connection")).to_have_attribute("data-state", "open")
    await expect(card).to_contain_text("Uploaded")  # no failed card left behind
    await expect(card.get_by_role("alert")).to_have_count(0)
    await page.get_by_role("button", name="Send").click()
    await expect(page.locator("#message-list .file-card")).to_contain_text("minutes.txt")
    [stored] = await history(alice, channel_id)
    assert [a["filename"] for a in stored["attachments"]] == ["minutes.txt"]
    tab.assert_no_problems()


async def test_the_login_screen_says_how_to_create_the_first_user(
    browsers: Browsers, size: str
) -> None:
    tab = await browsers.tab(**SIZES[size])
    page = tab.page
    await page.goto(tab.base_url)
    first_run = page.get_by_role("region", name="First time here?")
    await expect(first_run).to_be_visible()
    await expect(first_run.locator("pre")).to_have_text(
        "echora create-user --workspace acme --admin alice"
    )
    box = await first_run.bounding_box()
    assert box and box["x"] >= 0 and box["x"] + box["width"] <= SIZES[size]["viewport"]["width"]
    tab.assert_no_problems()
