"""The composer never loses what was typed or attached, whatever the network does.

Sends race the keyboard here for real, in two places: a message's POST is held for
700 ms before it reaches the server (route interception), and Chromium's network
emulation (DevTools protocol) adds 700 ms to every answer the page gets. So the message
lands (over the WebSocket, which neither delays) while its POST is still unanswered, and
text and files arrive in the composer throughout. A refused send is the server's own
refusal, or a 503 answered in its place. Both window sizes run every test.
"""

from __future__ import annotations

from typing import Any

import pytest
from playwright.async_api import Page, Route
from support.browser import Browsers, Tab, artifact_path, expect, open_tab
from support.people import People, Person

LATENCY_MS = 700


@pytest.fixture
def config_overrides() -> dict[str, Any]:
    return {"message_rate_burst": 100}


async def make_channel(person: Person, name: str = "general") -> int:
    response = await person.post(
        "/api/channels", json={"workspace_id": person.workspace_id, "name": name}
    )
    assert response.status == 201, await response.text()
    return int((await response.json())["id"])


async def history(person: Person, channel_id: int) -> list[dict[str, Any]]:
    """Oldest first."""
    response = await person.get(f"/api/channels/{channel_id}/messages")
    assert response.status == 200, await response.text()
    return list(reversed((await response.json())["messages"]))


async def slow_network(tab: Tab, latency_ms: int = LATENCY_MS) -> None:
    cdp = await tab.context.new_cdp_session(tab.page)
    await cdp.send("Network.enable")
    await cdp.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": latency_ms, "downloadThroughput": -1, "uploadThroughput": -1},
    )


async def hold_posts(page: Page, channel_id: int, ms: int = LATENCY_MS) -> None:
    """Every message POST of the page waits ``ms`` before it goes to the server."""

    async def hold(route: Route) -> None:
        if route.request.method == "POST":
            await page.wait_for_timeout(ms)
        await route.continue_()

    await page.route(f"**/api/channels/{channel_id}/messages", hold)


def box_at_post_answers(page: Page) -> list[str]:
    """What the message box held each time a message POST got its answer."""
    seen: list[str] = []

    async def on_finished(request: Any) -> None:
        if request.method == "POST" and request.url.endswith("/messages"):
            seen.append(await page.locator("#message-input").input_value())

    page.on("requestfinished", on_finished)
    return seen


async def record_box_when_first_message_lands(page: Page) -> None:
    """What the message box held at the moment the first message row appeared."""
    await page.evaluate(
        """() => {
          const list = document.querySelector("#message-list");
          const box = document.querySelector("#message-input");
          new MutationObserver((records, observer) => {
            if (!list.children.length) return;
            window.boxWhenSent = box.value;
            observer.disconnect();
          }).observe(list, { childList: true });
        }"""
    )


def box(page: Page) -> Any:
    return page.get_by_label("Message", exact=True)


def message_rows(page: Page) -> Any:
    return page.locator("#message-list > li")


def pending(page: Page, name: str) -> Any:
    return page.locator(".pending-item").filter(has_text=name)


def outgoing(page: Page) -> Any:
    return page.locator("#outbox > li")


async def test_typing_while_a_message_is_sending_keeps_every_character(
    browsers: Browsers, people: People, size: str
) -> None:
    alice = await people.create("alice")
    channel_id = await make_channel(alice)
    tab = await open_tab(browsers, size, "alice")
    page = tab.page
    await slow_network(tab)
    await hold_posts(page, channel_id)
    await record_box_when_first_message_lands(page)
    at_answers = box_at_post_answers(page)

    await box(page).fill("first ping")
    await page.keyboard.press("Enter")
    # Emptied at once: the snapshot waits in the outbox while the POST is on its way.
    await expect(box(page)).to_have_value("")
    await expect(outgoing(page)).to_contain_text("first ping")
    await expect(outgoing(page)).to_contain_text("Sending…")
    # Typed one key at a time, across the moment the first message lands and the later
    # one its POST is answered (about 2 s of typing against 700 ms each way).
    second = "second ping, typed key by key while the first one was on its way out"
    await page.keyboard.type(second, delay=30)
    await expect(box(page)).to_have_value(second)
    await expect(message_rows(page)).to_have_count(1)
    during = [await page.evaluate("window.boxWhenSent"), *at_answers]
    assert len(during) == 2, during
    for value in during:  # both moments fell inside the typing
        assert 0 < len(value) < len(second) and second.startswith(value), during

    # Enter while a send is in flight queues the next one: both land, in order.
    await page.keyboard.press("Enter")
    await box(page).fill("third")
    await page.keyboard.press("Enter")
    await expect(box(page)).to_have_value("")
    await expect(message_rows(page)).to_have_count(3)
    await expect(outgoing(page)).to_have_count(0)
    texts = await page.locator("#message-list .content").all_text_contents()
    assert texts == ["first ping", second, "third"]
    stored = [m["content"] for m in await history(alice, channel_id)]
    assert stored == ["first ping", second, "third"]
    tab.assert_no_problems()


async def test_a_file_added_during_a_send_goes_with_the_next_message(
    browsers: Browsers, people: People, size: str
) -> None:
    alice, bob = await people.create("alice"), await people.create("bob")
    channel_id = await make_channel(alice)
    assert (await bob.post(f"/api/channels/{channel_id}/join")).status == 200
    for n in range(30):
        response = await bob.post(
            f"/api/channels/{channel_id}/messages", json={"content": f"earlier {n:02d}"}
        )
        assert response.status == 201
    tab = await open_tab(browsers, size, "alice")
    page = tab.page
    log = page.locator("#messages")
    await log.evaluate("el => { el.scrollTop = 0; }")  # reading history when sending
    await slow_network(tab)
    await hold_posts(page, channel_id)

    await box(page).fill("text first")
    await page.keyboard.press("Enter")
    await page.locator("#file-input").set_input_files(
        {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"attached later"}
    )
    card = pending(page, "notes.txt")
    await expect(card).to_be_visible()
    await expect(outgoing(page)).to_contain_text("Sending…")  # added during the send
    sent = message_rows(page).filter(has_text="text first")
    await expect(sent).to_be_visible()
    await expect(sent).to_be_in_viewport()  # the sent message is brought into view
    await expect(card).to_contain_text("Uploaded")
    await expect(card).to_be_visible()  # still pending, not swallowed by the first send
    first = (await history(alice, channel_id))[-1]
    assert first["content"] == "text first" and first["attachments"] == []

    # More cards than fit: they scroll in their own box, the newest message stays in view.
    await page.locator("#file-input").set_input_files(
        [
            {"name": f"extra-{n}.txt", "mimeType": "text/plain", "buffer": b"x" * (n + 1)}
            for n in range(5)
        ]
    )
    await expect(page.locator(".pending-item")).to_have_count(6)
    for n in range(5):
        await expect(pending(page, f"extra-{n}.txt")).to_contain_text("Uploaded")
    await expect(sent).to_be_in_viewport(ratio=1)
    newest = await sent.bounding_box()
    composer = await page.locator("#composer").bounding_box()
    assert newest and composer and newest["y"] + newest["height"] <= composer["y"]
    await page.screenshot(path=artifact_path(f"chat-view-pending-{size}.png"))

    await page.keyboard.press("Enter")
    await expect(page.locator(".pending-item")).to_have_count(0)
    with_files = message_rows(page).filter(has=page.locator(".file-card"))
    await expect(with_files).to_have_count(1)
    await expect(with_files).to_be_in_viewport()
    last = (await history(alice, channel_id))[-1]
    assert last["content"] == ""
    assert [a["filename"] for a in last["attachments"]] == ["notes.txt"] + [
        f"extra-{n}.txt" for n in range(5)
    ]
    await page.mouse.move(0, 0)
    await page.screenshot(path=artifact_path(f"chat-view-{size}.png"))
    tab.assert_no_problems()


async def test_a_refused_send_keeps_its_text_and_files(
    browsers: Browsers, people: People, size: str
) -> None:
    alice = await people.create("alice")
    channel_id = await make_channel(alice)
    tab = await open_tab(browsers, size, "alice")
    page = tab.page

    # 1. The server's own refusal: too long.
    too_long = "x" * 4001
    await box(page).fill(too_long)
    await page.keyboard.press("Enter")
    await expect(page.locator("#composer-error")).to_contain_text("Not sent")
    await expect(box(page)).to_have_value(too_long)
    await expect(outgoing(page)).to_have_count(0)

    # 2. A 503 in the server's place, slowly, with more typed while it is on its way.
    posted: list[str] = []

    async def refuse(route: Route) -> None:
        if route.request.method != "POST":
            await route.continue_()
            return
        posted.append(route.request.post_data or "")
        await page.wait_for_timeout(LATENCY_MS)
        await route.fulfill(
            status=503,
            json={"error": {"code": "database_unavailable", "message": "Try again shortly."}},
        )

    await page.route(f"**/api/channels/{channel_id}/messages", refuse)
    await box(page).fill("")
    await page.locator("#file-input").set_input_files(
        {"name": "report.txt", "mimeType": "text/plain", "buffer": b"the report"}
    )
    await expect(pending(page, "report.txt")).to_contain_text("Uploaded")
    await box(page).fill("the report, attached")
    await page.keyboard.press("Enter")
    await expect(pending(page, "report.txt")).to_have_count(0)  # in the outbox now
    await page.keyboard.type("and a PS")
    error = page.locator("#composer-error")
    await expect(error).to_have_text("Not sent: Try again shortly.")
    await expect(box(page)).to_have_value("the report, attached\nand a PS")
    await expect(pending(page, "report.txt")).to_contain_text("Uploaded")
    await expect(outgoing(page)).to_have_count(0)
    assert len(posted) == 1
    assert await history(alice, channel_id) == []

    # The server back: the same text and file go out.
    await page.unroute(f"**/api/channels/{channel_id}/messages")
    await page.keyboard.press("Enter")
    await expect(message_rows(page)).to_have_count(1)
    await expect(error).to_be_hidden()
    await expect(page.locator(".pending-item")).to_have_count(0)
    [stored] = await history(alice, channel_id)
    assert stored["content"] == "the report, attached\nand a PS"
    assert [a["filename"] for a in stored["attachments"]] == ["report.txt"]
    tab.assert_no_problems()
