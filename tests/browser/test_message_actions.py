"""Message actions in the browser: edit in place, delete after a confirmation, copy a link
(reacting: test_reactions).

The toolbar opens on hover (desktop), on keyboard focus, and on a long press (phone);
what it offers follows the server's rules (the author edits; the author and workspace
owners and admins delete), and another user's tab sees every change live.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.async_api import Locator, Page
from support.browser import SIZES, Browsers, artifact_path, assert_accessible, expect, open_tab
from support.chat import channel_with, post
from support.people import People, Person


@pytest.fixture
def config_overrides() -> dict[str, Any]:
    return {"message_rate_burst": 100}  # one test posts 60 messages at once


async def history(person: Person, channel_id: int) -> list[dict[str, Any]]:
    response = await person.get(f"/api/channels/{channel_id}/messages")
    assert response.status == 200, await response.text()
    return list(reversed((await response.json())["messages"]))


def row(page: Page, text: str) -> Locator:
    return page.locator("#message-list > li").filter(has_text=text)


async def pinned(page: Page, text: str) -> Locator:
    """The row showing ``text`` now, found by its id (an editor hides the text)."""
    row_id = await row(page, text).get_attribute("id")
    return page.locator(f"#{row_id}")


async def open_actions(row_: Locator, size: str) -> Locator:
    """Hover on a desktop; a long press (touch pointer held) on a phone."""
    toolbar = row_.get_by_role("toolbar")
    if size == "desktop":
        await row_.hover()
    else:
        box = await row_.bounding_box()
        assert box
        point = {"clientX": box["x"] + 20, "clientY": box["y"] + 10}
        init = {"pointerType": "touch", "isPrimary": True, "bubbles": True, **point}
        await row_.locator(".message-meta").dispatch_event("pointerdown", init)
        await expect(row_).to_have_class(re.compile(r"\bactions-open\b"))
        await row_.locator(".message-meta").dispatch_event("pointerup", init)
    await expect(toolbar).to_have_css("opacity", "1")
    return toolbar


async def press(page: Page, button: Locator, size: str) -> None:
    if size == "desktop":
        await button.click()
    else:
        await button.tap()


async def test_edit_in_place_and_delete_with_confirmation_show_live_elsewhere(
    browsers: Browsers, people: People, size: str
) -> None:
    alice, bob = await people.create("alice"), await people.create("bob")
    channel_id = await channel_with(alice, bob)
    await post(alice, channel_id, "helo wrld")
    await post(alice, channel_id, "second <b>one</b>")
    tab_a = await open_tab(browsers, size, "alice")
    tab_b = await browsers.tab(**SIZES["desktop"])
    await tab_b.login("bob")
    page_a, page_b = tab_a.page, tab_b.page

    # Edit: the text becomes an editor; Escape cancels, and the focus comes back.
    first = await pinned(page_a, "helo wrld")
    toolbar = await open_actions(first, size)
    await press(page_a, toolbar.get_by_role("button", name="Edit"), size)
    editor = first.get_by_role("textbox", name="Edit message")
    await expect(editor).to_be_focused()
    await expect(editor).to_have_value("helo wrld")
    await page_a.keyboard.type(" and junk")
    await page_a.keyboard.press("Escape")
    await expect(editor).to_have_count(0)
    await expect(first.locator(".content")).to_have_text("helo wrld")
    await expect(first.get_by_role("button", name="Edit")).to_be_focused()

    # Enter saves (Shift+Enter is a new line); the other tab sees it live.
    await page_a.keyboard.press("Enter")  # on the focused Edit button: the editor again
    await expect(editor).to_be_focused()
    await editor.fill("hello world")
    await page_a.keyboard.press("Shift+Enter")
    await page_a.keyboard.type("<i>fixed</i>")
    await page_a.keyboard.press("Enter")
    edited = first
    await expect(edited.locator(".content")).to_have_text("hello world\n<i>fixed</i>")
    await expect(edited).to_contain_text("(edited)")
    await expect(edited.get_by_role("button", name="Edit")).to_be_focused()
    seen_by_bob = row(page_b, "hello world")
    await expect(seen_by_bob.locator(".content")).to_have_text("hello world\n<i>fixed</i>")
    await expect(seen_by_bob).to_contain_text("(edited)")
    assert await page_b.locator("#message-list i, #message-list b").count() == 0
    stored = await history(alice, channel_id)
    assert [m["content"] for m in stored] == ["hello world\n<i>fixed</i>", "second <b>one</b>"]

    # A refused edit (emptied) keeps the editor open and says why.
    toolbar = await open_actions(edited, size)
    await press(page_a, toolbar.get_by_role("button", name="Edit"), size)
    await editor.fill("   ")
    await page_a.keyboard.press("Enter")
    await expect(edited.get_by_role("alert")).to_contain_text("Not saved")
    await expect(editor).to_be_visible()
    await page_a.keyboard.press("Escape")
    await expect(edited.locator(".content")).to_have_text("hello world\n<i>fixed</i>")

    # Delete asks first; Cancel keeps the message and gives the focus back.
    second = row(page_a, "second <b>one</b>")
    toolbar = await open_actions(second, size)
    delete = toolbar.get_by_role("button", name="Delete")
    await press(page_a, delete, size)
    dialog = page_a.get_by_role("dialog", name="Delete this message?")
    await expect(dialog).to_be_visible()
    await expect(dialog).to_contain_text("second <b>one</b>")
    await expect(dialog.get_by_role("button", name="Cancel")).to_be_focused()
    await page_a.screenshot(path=artifact_path(f"delete-dialog-{size}.png"))
    await assert_accessible(page_a, "delete dialog")
    await dialog.get_by_role("button", name="Cancel").click()
    await expect(dialog).to_be_hidden()
    await expect(second).to_be_visible()
    if size == "desktop":
        await expect(delete).to_be_focused()
    assert len(await history(alice, channel_id)) == 2

    toolbar = await open_actions(second, size)
    await press(page_a, toolbar.get_by_role("button", name="Delete"), size)
    await dialog.get_by_role("button", name="Delete").click()
    await expect(dialog).to_be_hidden()
    await expect(second).to_have_count(0)
    await expect(row(page_b, "second <b>one</b>")).to_have_count(0)
    await expect(page_a.get_by_role("log")).to_be_focused()
    assert [m["content"] for m in await history(alice, channel_id)] == ["hello world\n<i>fixed</i>"]
    await page_a.mouse.move(0, 0)
    await page_a.screenshot(path=artifact_path(f"message-actions-{size}.png"))
    tab_a.assert_no_problems()
    tab_b.assert_no_problems()


async def test_actions_follow_who_may_do_what(browsers: Browsers, people: People) -> None:
    alice, bob = await people.create("alice"), await people.create("bob")
    carol = await people.create("carol", role="admin")
    channel_id = await channel_with(alice, bob, carol)
    await post(alice, channel_id, "by alice")
    await post(bob, channel_id, "by bob")

    tab_b = await open_tab(browsers, "desktop", "bob")
    page_b = tab_b.page
    others = await open_actions(row(page_b, "by alice"), "desktop")
    await expect(others.get_by_role("button")).to_have_text(["React", "Copy link"])
    own = await open_actions(row(page_b, "by bob"), "desktop")
    await expect(own.get_by_role("button")).to_have_text(["Edit", "Delete", "React", "Copy link"])
    # The server decides anyway: what the page does not offer, it refuses.
    alices = (await history(alice, channel_id))[0]["id"]
    status = await page_b.evaluate(
        """async (id) => (await fetch(`/api/messages/${id}`, {
             method: "PATCH", headers: {"Content-Type": "application/json"},
             body: JSON.stringify({content: "taken over"}),
           })).status""",
        alices,
    )
    assert status == 403

    # Keyboard focus shows the toolbar too.
    await row(page_b, "by alice").get_by_role("button", name="Copy link").focus()
    await expect(row(page_b, "by alice").get_by_role("toolbar")).to_have_css("opacity", "1")

    # A workspace admin may delete others' messages, never edit them.
    tab_c = await open_tab(browsers, "desktop", "carol")
    page_c = tab_c.page
    moderated = await open_actions(row(page_c, "by bob"), "desktop")
    await expect(moderated.get_by_role("button")).to_have_text(["Delete", "React", "Copy link"])
    await moderated.get_by_role("button", name="Delete").click()
    await page_c.get_by_role("dialog").get_by_role("button", name="Delete").click()
    await expect(row(page_c, "by bob")).to_have_count(0)
    await expect(row(page_b, "by bob")).to_have_count(0)
    assert [m["content"] for m in await history(alice, channel_id)] == ["by alice"]
    tab_b.assert_no_problems()
    tab_c.assert_no_problems()


async def test_a_copied_link_opens_the_message(browsers: Browsers, people: People) -> None:
    alice, bob = await people.create("alice"), await people.create("bob")
    channel_id = await channel_with(alice, bob)
    target = await post(alice, channel_id, "the one to find")
    for n in range(60):  # the linked message is beyond the first page
        await post(alice, channel_id, f"later {n:02d}")
    other = await alice.post(
        "/api/channels", json={"workspace_id": alice.workspace_id, "name": "elsewhere"}
    )
    assert other.status == 201
    await bob.post(f"/api/channels/{(await other.json())['id']}/join")
    tab = await browsers.tab(**SIZES["desktop"])
    await tab.context.grant_permissions(["clipboard-read", "clipboard-write"])
    await tab.login("alice")
    page = tab.page
    await page.get_by_role("button", name="general", exact=True).click()
    toolbar = await open_actions(row(page, "later 59"), "desktop")
    await toolbar.get_by_role("button", name="Copy link").click()
    await expect(toolbar.get_by_role("button", name="Link copied")).to_be_visible()
    await expect(page.locator("#announcer")).to_have_text("Link copied.")
    link = await page.evaluate("navigator.clipboard.readText()")
    assert link.startswith(tab.base_url.rstrip("/") + "/#") and "message=" in link

    # Bob, in another channel, follows a link to the older message.
    tab_b = await browsers.tab(**SIZES["desktop"])
    await tab_b.login("bob")
    await expect(tab_b.page.locator("#channel-title")).to_have_text("#elsewhere")
    target_link = re.sub(r"message=\d+", f"message={target['id']}", link)
    await tab_b.page.goto(target_link)
    await tab_b.ready()
    found = row(tab_b.page, "the one to find")
    await expect(found).to_be_focused()
    await expect(found).to_have_class(re.compile(r"\blinked\b"))
    await expect(found).to_be_in_viewport()
    await expect(tab_b.page.locator("#channel-title")).to_have_text("#general")
    # Opened afresh (a reload, as from another app), the link leads there too.
    await tab_b.page.reload()
    await tab_b.ready()
    await expect(found).to_be_focused()
    await expect(found).to_be_in_viewport()
    tab.assert_no_problems()
    tab_b.assert_no_problems()
