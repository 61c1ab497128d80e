"""Unread counts in the browser, from the server's read state: the sidebar's counts (and a
mention's emphasis) after someone else posts, kept across a reload; the tab title's total;
the "New messages" line when a channel opens; and reading in one tab clearing the count in
another tab of the same person."""

from __future__ import annotations

import re

from playwright.async_api import Locator, Page
from support.browser import Browsers, Tab, expect
from support.chat import channel_with, post
from support.people import People, Person


async def read_state(person: Person, channel_id: int) -> tuple[int | None, int, int]:
    response = await person.get("/api/channels", params={"workspace_id": str(person.workspace_id)})
    (channel,) = [c for c in (await response.json())["channels"] if c["id"] == channel_id]
    return channel["last_read_message_id"], channel["unread_count"], channel["mention_count"]


def channel_button(page: Page, name: str) -> Locator:
    return page.locator("#my-channels button").filter(
        has=page.locator(".channel-name", has_text=re.compile(f"^{name}$"))
    )


def badge(page: Page, name: str) -> Locator:
    return channel_button(page, name).locator(".badge")


def row(page: Page, text: str) -> Locator:
    return page.locator("#message-list > li").filter(has_text=text)


async def opened_on(browsers: Browsers, username: str, channel: str) -> Tab:
    tab = await browsers.tab()
    await tab.login(username)
    await channel_button(tab.page, channel).click()
    await expect(tab.page.locator("#channel-title")).to_have_text(f"#{channel}")
    await tab.ready()
    return tab


async def test_counts_show_live_survive_a_reload_and_go_when_read(
    browsers: Browsers, people: People
) -> None:
    alice, bob = await people.create("alice"), await people.create("bob")
    general = await channel_with(alice, bob, name="general")
    await channel_with(alice, bob, name="bulletin")
    seen = await post(alice, general, "an old one of mine")
    tab = await opened_on(browsers, "alice", "bulletin")
    page = tab.page
    await expect(page).to_have_title("#bulletin — Echora")
    await expect(badge(page, "general")).to_have_count(0)

    await post(bob, general, "are you there?")
    await post(bob, general, "@alice look at this")
    await expect(badge(page, "general")).to_have_text("2 unread, 1 mentioning you")
    await expect(badge(page, "general")).to_have_class(re.compile(r"\bmention\b"))
    await expect(page).to_have_title("(2) #bulletin — Echora")

    await page.reload()
    await tab.ready()
    await expect(badge(page, "general")).to_have_text("2 unread, 1 mentioning you")
    await expect(badge(page, "general")).to_have_class(re.compile(r"\bmention\b"))
    await expect(page).to_have_title("(2) #bulletin — Echora")
    assert await read_state(alice, general) == (None, 2, 1)  # never opened yet

    # Opened: the line above bob's first message, the count gone, the position saved.
    await channel_button(page, "general").click()
    await tab.ready()
    line = page.locator("#message-list .unread-line")
    await expect(line).to_have_count(1)
    await expect(line).to_have_text("New messages")
    await expect(row(page, "are you there?").locator(".unread-line")).to_have_count(1)
    await expect(row(page, seen["content"]).locator(".unread-line")).to_have_count(0)
    await expect(badge(page, "general")).to_have_count(0)
    await expect(page).to_have_title("#general — Echora")
    # What arrives while she looks is read as it comes.
    async with page.expect_response(
        lambda r: r.request.method == "POST" and r.url.endswith(f"/api/channels/{general}/read")
    ) as answer:
        newest = (await post(bob, general, "and one more"))["id"]
    assert (await (await answer.value).json())["last_read_message_id"] == newest
    await expect(row(page, "and one more")).to_be_visible()
    await expect(badge(page, "general")).to_have_count(0)
    assert await read_state(alice, general) == (newest, 0, 0)

    await page.reload()
    await tab.ready()
    await expect(page.locator("#channel-title")).to_have_text("#general")
    await expect(badge(page, "general")).to_have_count(0)
    await expect(page.locator("#message-list .unread-line")).to_have_count(0)
    tab.assert_no_problems()


async def test_reading_in_one_tab_clears_the_count_in_the_other(
    browsers: Browsers, people: People
) -> None:
    alice, bob = await people.create("alice"), await people.create("bob")
    general = await channel_with(alice, bob, name="general")
    await channel_with(alice, bob, name="bulletin")
    await post(alice, general, "for bob")
    bobs = await opened_on(browsers, "bob", "bulletin")
    one = await opened_on(browsers, "alice", "bulletin")
    two = await opened_on(browsers, "alice", "bulletin")
    await expect(badge(bobs.page, "general")).to_have_text("1 unread")
    await post(bob, general, "for alice")
    for tab in (one, two):
        await expect(badge(tab.page, "general")).to_have_text("1 unread")
        await expect(tab.page).to_have_title("(1) #bulletin — Echora")

    await channel_button(one.page, "general").click()
    await expect(row(one.page, "for alice")).to_be_visible()
    await expect(badge(one.page, "general")).to_have_count(0)
    await expect(badge(two.page, "general")).to_have_count(0)
    await expect(two.page).to_have_title("#bulletin — Echora")
    await expect(two.page.locator("#channel-title")).to_have_text("#bulletin")  # still there
    # Alice's reading is hers: bob's count stays.
    await expect(badge(bobs.page, "general")).to_have_text("1 unread")
    for tab in (one, two, bobs):
        tab.assert_no_problems()


async def test_edits_and_deletions_of_unread_messages_change_the_counts_live(
    browsers: Browsers, people: People
) -> None:
    alice, bob = await people.create("alice"), await people.create("bob")
    general = await channel_with(alice, bob, name="general")
    await channel_with(alice, bob, name="bulletin")
    tab = await opened_on(browsers, "alice", "bulletin")
    page = tab.page
    first = await post(bob, general, "one")
    second = await post(bob, general, "two")
    await expect(badge(page, "general")).to_have_text("2 unread")

    # An edit that mentions her: the server now counts a mention.
    edited = await bob.request(
        "PATCH", f"/api/messages/{second['id']}", json={"content": "two, @alice"}
    )
    assert edited.status == 200, await edited.text()
    await expect(badge(page, "general")).to_have_text("2 unread, 1 mentioning you")
    await expect(badge(page, "general")).to_have_class(re.compile(r"\bmention\b"))

    # Deleted unread messages are unread no more.
    assert (await bob.delete(f"/api/messages/{second['id']}")).status == 204
    await expect(badge(page, "general")).to_have_text("1 unread")
    assert (await bob.delete(f"/api/messages/{first['id']}")).status == 204
    await expect(badge(page, "general")).to_have_count(0)
    await expect(page).to_have_title("#bulletin — Echora")
    assert await read_state(alice, general) == (None, 0, 0)
    tab.assert_no_problems()
