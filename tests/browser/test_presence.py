"""Presence and typing in the browser, between real tabs (each its own browser context).

The member list opens from the channel header: a column beside the room on a desktop, the
whole screen on a phone. Each member has a dot whose state is a shape and words, not a
colour alone. Idleness is reached with Playwright's clock (the page's five minutes pass at
once); typing is a real person typing in the composer of another tab. Both window sizes run
every test.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Locator, Page, WebSocket
from support.browser import SIZES, Browsers, Tab, artifact_path, assert_accessible, expect
from support.chat import channel_with
from support.people import People, Person


@pytest.fixture
def config_overrides() -> dict[str, Any]:
    return {"presence_grace": 0.3, "presence_interval": 0.1}


async def open_tab(browsers: Browsers, size: str, username: str, *, clock: bool = False) -> Tab:
    tab = await browsers.tab(**SIZES[size])
    if clock:
        await tab.page.clock.install()  # time still flows; fast_forward skips ahead
    await tab.login(username)
    return tab


def member(page: Page, username: str) -> Locator:
    return page.locator("#member-list > li").filter(has_text=username)


async def expect_status(page: Page, username: str, status: str) -> None:
    dot = member(page, username).locator(".presence")
    await expect(dot).to_have_attribute("data-status", status)
    await expect(dot.locator(".presence-text")).to_have_text(f"({status})")  # the words


async def press(page: Page, button: Locator, size: str) -> None:
    if size == "desktop":
        await button.click()
    else:
        await button.tap()


async def test_the_member_panel_shows_who_is_online_away_and_offline(
    browsers: Browsers, people: People, size: str
) -> None:
    alice, bob, carol = [await people.create(name) for name in ("alice", "bob", "carol")]
    await channel_with(alice, bob, carol)
    tab_a = await open_tab(browsers, size, "alice")
    tab_b = await open_tab(browsers, "desktop", "bob", clock=True)
    page = tab_a.page

    toggle = page.get_by_role("button", name="Members")
    await expect(toggle).to_have_attribute("aria-expanded", "false")
    await press(page, toggle, size)
    panel = page.get_by_role("complementary", name="Members of #general")
    await expect(panel).to_be_visible()
    await expect(toggle).to_have_attribute("aria-expanded", "true")
    await expect(page.locator("#member-list > li")).to_have_count(3)
    await expect_status(page, "alice", "online")
    await expect_status(page, "bob", "online")
    await expect_status(page, "carol", "offline")  # never connected
    await expect(page.locator("#member-summary")).to_have_text("3 members, 2 online")
    # Not colour alone: each state has its own shape.
    shapes = await page.locator("#member-list .presence-dot").evaluate_all(
        "dots => dots.map(d => [getComputedStyle(d).borderTopWidth,"
        " getComputedStyle(d).backgroundImage !== 'none'])"
    )
    assert len({tuple(shape) for shape in shapes}) == 2  # online (filled) and offline (ring)

    box = await panel.bounding_box()
    assert box
    if size == "phone":  # the whole screen
        assert (box["x"], box["width"]) == (0, 390) and box["height"] >= 800
    else:  # a column beside the log, which stays in view
        log = await page.locator("#messages").bounding_box()
        assert log and log["x"] + log["width"] <= box["x"] + 1 and box["width"] < 300

    # Bob's tab sits without input for five minutes: away; a key press brings him back.
    await tab_b.page.clock.fast_forward("05:01")
    await expect_status(page, "bob", "away")
    await expect(page.locator("#member-summary")).to_have_text("3 members, 1 online, 1 away")
    await assert_accessible(page, "member panel")
    await page.screenshot(path=artifact_path(f"presence-panel-{size}.png"))
    await tab_b.page.keyboard.press("Shift")
    await expect_status(page, "bob", "online")

    # Bob closes his browser: offline once the grace is over.
    await tab_b.context.close()
    await expect_status(page, "bob", "offline")

    # Escape closes the panel; the focus goes back to its button.
    await panel.get_by_role("button", name="Close the member list").focus()
    await page.keyboard.press("Escape")
    await expect(panel).to_be_hidden()
    await expect(toggle).to_be_focused()
    tab_a.assert_no_problems()


def typing_frames(page: Page) -> list[dict[str, Any]]:
    """What the page sends over its socket that is typing."""
    sent: list[dict[str, Any]] = []

    def on_socket(ws: WebSocket) -> None:
        def on_frame(payload: str | bytes) -> None:
            frame = json.loads(payload)
            if frame.get("type") == "typing":
                sent.append(frame)

        ws.on("framesent", on_frame)

    page.on("websocket", on_socket)
    return sent


async def socket_of(person: Person) -> aiohttp.ClientWebSocketResponse:
    ws = await person.client.ws_connect("/api/ws", headers=person.auth)
    assert (await ws.receive_json(timeout=10))["type"] == "hello"
    return ws


async def test_the_typing_line_between_two_browsers(
    browsers: Browsers, people: People, size: str
) -> None:
    alice, bob, carol, dave = [
        await people.create(name) for name in ("alice", "bob", "carol", "dave")
    ]
    channel_id = await channel_with(alice, bob, carol, dave)
    tab_a = await open_tab(browsers, size, "alice", clock=True)
    tab_b = await browsers.tab(**SIZES["desktop"])
    sent = typing_frames(tab_b.page)
    await tab_b.login("bob")
    line = tab_a.page.locator("#typing-line")
    await expect(line).to_have_text("")

    # Bob types: his tab sends typing (once for the whole burst), alice's tab shows it.
    box = tab_b.page.get_by_role("textbox", name="Message")
    await box.press_sequentially("hello alice", delay=20)
    await expect(line).to_have_text("bob is typing…")
    assert [frame["channel_id"] for frame in sent] == [channel_id]

    # Two, then three people.
    others = [await socket_of(person) for person in (carol, dave)]
    await others[0].send_json({"type": "typing", "channel_id": channel_id})
    await expect(line).to_have_text("bob and carol are typing…")
    await others[1].send_json({"type": "typing", "channel_id": channel_id})
    await expect(line).to_have_text("several people are typing…")

    # Bob's message arrives: his name goes at once.
    await box.press("Enter")
    await expect(tab_a.page.locator("#message-list")).to_contain_text("hello alice")
    await expect(line).to_have_text("carol and dave are typing…")
    # A few seconds without another typing frame: the line empties.
    await tab_a.page.clock.fast_forward("00:07")
    await expect(line).to_have_text("")
    assert len(sent) == 1  # bob's Enter sent no typing of its own
    for ws in others:
        await ws.close()
    tab_a.assert_no_problems()
    tab_b.assert_no_problems()
