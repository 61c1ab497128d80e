"""Reactions in the browser: the React button in a message's actions opens a picker of
common emoji; a chip per emoji shows its count (pressed when one is mine) and toggles mine;
another member's tab follows live; an archived channel shows the counts and offers nothing.
"""

from __future__ import annotations

import re
from typing import Any

from playwright.async_api import Locator, Page
from support.browser import Browsers, assert_accessible, expect, open_tab
from support.chat import channel_with, post
from support.people import People, Person


async def reactions_seen_by(person: Person, channel_id: int) -> list[dict[str, Any]]:
    response = await person.get(f"/api/channels/{channel_id}/messages")
    [message] = (await response.json())["messages"]
    return list(message["reactions"])


def row(page: Page, text: str) -> Locator:
    return page.locator("#message-list > li").filter(has_text=text)


def chip(row_: Locator, emoji: str) -> Locator:
    return row_.locator(".reactions button", has_text=emoji)


async def test_react_from_the_picker_toggle_by_the_chip_and_see_it_live(
    browsers: Browsers, people: People, size: str
) -> None:
    alice, bob = await people.create("alice"), await people.create("bob")
    channel_id = await channel_with(alice, bob)
    await post(bob, channel_id, "ship it?")
    tab_a = await open_tab(browsers, size, "alice")
    tab_b = await open_tab(browsers, size, "bob")
    row_a, row_b = row(tab_a.page, "ship it?"), row(tab_b.page, "ship it?")
    await expect(row_b).to_be_visible()

    # By keyboard: focus the message's React button, open the picker, pick the second emoji.
    react = row_a.get_by_role("button", name="React", exact=True)
    await react.focus()
    await react.press("Enter")
    picker = row_a.get_by_role("group", name="Pick a reaction")
    await expect(picker).to_be_visible()
    await assert_accessible(tab_a.page, "reaction picker")
    await tab_a.page.keyboard.press("ArrowRight")
    await tab_a.page.keyboard.press("Enter")
    await expect(picker).to_be_hidden()
    await expect(react).to_be_focused()
    mine_a = chip(row_a, "❤️")
    await expect(mine_a).to_have_attribute("aria-pressed", "true")
    await expect(mine_a).to_contain_text("1")
    # Bob's tab hears it: the count, not pressed for him.
    theirs_b = chip(row_b, "❤️")
    await expect(theirs_b).to_contain_text("1")
    await expect(theirs_b).to_have_attribute("aria-pressed", "false")
    assert await reactions_seen_by(bob, channel_id) == [{"emoji": "❤️", "count": 1, "mine": False}]

    # Bob adds his by the chip: two in both tabs, pressed for each of them.
    await theirs_b.click()
    await expect(theirs_b).to_have_attribute("aria-pressed", "true")
    await expect(theirs_b).to_contain_text("2")
    await expect(mine_a).to_contain_text("2")
    await expect(mine_a).to_have_attribute("aria-pressed", "true")

    # Alice takes hers back; a reload shows the server's state.
    await mine_a.click()
    await expect(mine_a).to_have_attribute("aria-pressed", "false")
    await expect(mine_a).to_contain_text("1")
    await expect(theirs_b).to_contain_text("1")
    await tab_a.page.reload()
    again = chip(row(tab_a.page, "ship it?"), "❤️")
    await expect(again).to_have_attribute("aria-pressed", "false")
    await expect(again).to_contain_text("1")
    assert await reactions_seen_by(alice, channel_id) == [{"emoji": "❤️", "count": 1, "mine": False}]
    assert await reactions_seen_by(bob, channel_id) == [{"emoji": "❤️", "count": 1, "mine": True}]
    tab_a.assert_no_problems()
    tab_b.assert_no_problems()


async def test_an_edit_keeps_my_pressed_chip_and_escape_closes_the_picker(
    browsers: Browsers, people: People
) -> None:
    alice, bob = await people.create("alice"), await people.create("bob")
    channel_id = await channel_with(alice, bob)
    message = await post(bob, channel_id, "first draft")
    tab = await open_tab(browsers, "desktop", "alice")
    row_ = row(tab.page, "first draft")
    await row_.hover()
    await row_.get_by_role("button", name="React", exact=True).click()
    await row_.get_by_role("button", name="React with 👍").click()
    await expect(chip(row_, "👍")).to_have_attribute("aria-pressed", "true")
    # An edit's event carries no "mine": the chip stays pressed.
    response = await bob.request(
        "PATCH", f"/api/messages/{message['id']}", json={"content": "second draft"}
    )
    assert response.status == 200, await response.text()
    edited = row(tab.page, "second draft")
    await expect(edited).to_be_visible()
    await expect(chip(edited, "👍")).to_have_attribute("aria-pressed", "true")
    await edited.hover()
    await edited.get_by_role("button", name="React", exact=True).click()
    picker = edited.get_by_role("group", name="Pick a reaction")
    await expect(picker).to_be_visible()
    await tab.page.keyboard.press("Escape")
    await expect(picker).to_be_hidden()
    tab.assert_no_problems()


async def test_an_archived_channel_shows_the_counts_and_offers_no_reaction(
    browsers: Browsers, people: People
) -> None:
    alice = await people.create("alice", role="admin")
    bob = await people.create("bob")
    channel_id = await channel_with(alice, bob)
    message = await post(bob, channel_id, "old news")
    response = await bob.request("PUT", f"/api/messages/{message['id']}/reactions/👀")
    assert response.status == 201, await response.text()
    tab = await open_tab(browsers, "desktop", "alice")
    row_ = row(tab.page, "old news")
    await expect(row_.get_by_role("button", name="React", exact=True)).to_have_count(1)
    archived = await alice.post(f"/api/channels/{channel_id}/archive")
    assert archived.status == 200, await archived.text()
    # Live: the archive event turns the room read-only.
    await expect(row_.get_by_role("button", name="React", exact=True)).to_have_count(0)
    seen = chip(row_, "👀")
    await expect(seen).to_contain_text("1")
    await expect(seen).to_be_disabled()
    await expect(row_.get_by_role("button", name=re.compile("^(Edit|Delete)$"))).to_have_count(0)
    tab.assert_no_problems()
