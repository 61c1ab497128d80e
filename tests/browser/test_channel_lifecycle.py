"""The sidebar and the channel dialogs in chromium: direct messages, browsing and joining,
creating, leaving, and a channel's rename, topic, archive and delete seen live by others."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient
from playwright.async_api import Page
from support.browser import SIZES, Browsers, Tab, expect, screenshot
from support.people import People, Person


async def make_channel(person: Person, name: str, **fields: Any) -> int:
    response = await person.post(
        "/api/channels", json={"workspace_id": person.workspace_id, "name": name, **fields}
    )
    assert response.status == 201, await response.text()
    return int((await response.json())["id"])


async def join(person: Person, channel_id: int) -> None:
    response = await person.post(f"/api/channels/{channel_id}/join")
    assert response.status == 200, await response.text()


def sidebar_channel(page: Page, name: str) -> Any:
    return page.locator("#my-channels").get_by_role("button", name=name, exact=True)


async def logged_in(browsers: Browsers, username: str) -> Tab:
    tab = await browsers.tab()
    await tab.login(username)
    return tab


async def test_direct_messages_in_the_sidebar_and_the_new_dm_dialog(
    browsers: Browsers, people: People
) -> None:
    alice, bob = await people.create("alice"), await people.create("bob")
    await people.create("carol")
    await make_channel(alice, "general")
    tab = await logged_in(browsers, "alice")
    page = tab.page
    dms = page.locator("#dm-list")
    await expect(page.locator("#no-dms")).to_be_visible()

    # Bob opens a conversation with alice: it shows up in her sidebar at once.
    response = await bob.post(
        f"/api/workspaces/{bob.workspace_id}/dms", json={"user_ids": [alice.user_id]}
    )
    assert response.status == 201
    await expect(dms.get_by_role("button", name="bob", exact=True)).to_be_visible()
    await expect(page.locator("#no-dms")).to_be_hidden()
    await dms.get_by_role("button", name="bob", exact=True).click()
    await expect(page.locator("#channel-title")).to_have_text("bob")
    await expect(page.locator("#edit-channel")).to_be_hidden()
    await expect(page.locator("#leave-channel")).to_be_hidden()

    # She starts one with carol from the dialog, finding her by name.
    await page.get_by_role("button", name="New direct message").click()
    dialog = page.get_by_role("dialog", name="New direct message")
    await expect(dialog).to_be_visible()
    await expect(dialog.get_by_role("checkbox")).to_have_count(2)  # bob and carol, not her
    await dialog.get_by_label("Find people").fill("car")
    await expect(dialog.get_by_role("checkbox")).to_have_count(1)
    await dialog.get_by_label("carol (carol)").check()
    await dialog.get_by_role("button", name="Start conversation").click()
    await expect(dialog).to_be_hidden()
    await expect(page.locator("#channel-title")).to_have_text("carol")
    await expect(dms.get_by_role("button", name="carol", exact=True)).to_have_attribute(
        "aria-current", "page"
    )
    await page.get_by_label("Message", exact=True).fill("hello carol")
    await page.keyboard.press("Enter")
    await expect(page.locator("#message-list > li").filter(has_text="hello carol")).to_be_visible()
    await screenshot(page, "direct-message.png")
    tab.assert_no_problems()


async def test_browse_dialog_searches_and_joins(browsers: Browsers, people: People) -> None:
    alice = await people.create("alice")
    await people.create("bob")
    await make_channel(alice, "design", topic="pixels and type")
    await make_channel(alice, "devops")
    await make_channel(alice, "random")
    await make_channel(alice, "hidden", private=True)
    tab = await logged_in(browsers, "bob")
    page = tab.page

    await page.get_by_role("button", name="Browse").click()
    dialog = page.get_by_role("dialog", name="Browse channels")
    found = dialog.locator("#browse-list > li")
    await expect(found).to_have_count(3)  # not the private one
    search = dialog.get_by_label("Search channels")
    await expect(search).to_be_focused()
    await search.fill("de")
    await expect(found).to_have_count(2)
    await search.fill("PIXELS")  # topics count, case aside
    await expect(found).to_have_count(1)
    await expect(found).to_contain_text("design")
    await search.fill("nothing like it")
    await expect(dialog.locator("#browse-empty")).to_be_visible()
    await search.fill("ops")
    await dialog.get_by_role("button", name="Join #devops").click()
    await expect(dialog).to_be_hidden()
    await expect(page.locator("#channel-title")).to_have_text("#devops")
    await expect(sidebar_channel(page, "devops")).to_have_attribute("aria-current", "page")

    # Joined channels are opened from it, not joined again.
    await page.get_by_role("button", name="Browse").click()
    await dialog.get_by_role("button", name="Open #devops").click()
    await expect(dialog).to_be_hidden()
    await page.get_by_role("button", name="Browse").click()
    await page.keyboard.press("Escape")
    await expect(dialog).to_be_hidden()
    await expect(page.get_by_role("button", name="Browse")).to_be_focused()
    tab.assert_no_problems()


async def test_create_channel_dialog_and_leave(browsers: Browsers, people: People) -> None:
    alice = await people.create("alice")
    general = await make_channel(alice, "general")
    tab = await logged_in(browsers, "alice")
    page = tab.page
    await expect(page.locator("#channel-title")).to_have_text("#general")

    await page.get_by_role("button", name="New channel").click()
    dialog = page.get_by_role("dialog", name="New channel")
    await dialog.get_by_role("button", name="Create channel").click()
    await expect(dialog.locator("#create-channel-error")).to_have_text("Give the channel a name.")
    await dialog.get_by_label("Name", exact=True).fill("plans")
    await dialog.get_by_label("Topic (optional)").fill("what comes next")
    await dialog.get_by_label("Private: only the people added see it").check()
    await dialog.get_by_role("button", name="Create channel").click()
    await expect(dialog).to_be_hidden()
    await expect(page.locator("#channel-title")).to_have_text("#plans")
    await expect(page.locator("#channel-topic")).to_have_text("what comes next")
    await expect(sidebar_channel(page, "plans (private)")).to_have_attribute("aria-current", "page")

    # Leaving: gone from the sidebar, another channel of mine shown.
    await page.get_by_role("button", name="Leave #plans").click()
    await expect(sidebar_channel(page, "plans (private)")).to_have_count(0)
    await expect(page.locator("#channel-title")).to_have_text("#general")
    await page.get_by_role("button", name="Leave #general").click()
    await expect(page.locator("#channel-title")).to_have_text("No channel")
    members = await (await alice.get(f"/api/channels/{general}/members")).json()
    assert members["members"] == []
    tab.assert_no_problems()


async def test_topic_and_name_edits_archive_and_delete_are_seen_live(
    client: TestClient, browsers: Browsers, people: People
) -> None:
    admin = await people.create("adam", role="admin")  # the first is the workspace's owner
    alice, bob = await people.create("alice"), await people.create("bob")
    await people.create("carol")
    general = await make_channel(alice, "general")
    random = await make_channel(alice, "random")
    doomed = await make_channel(alice, "doomed")
    for channel_id in (general, random, doomed):
        await join(bob, channel_id)
    tab_a, tab_b = await logged_in(browsers, "alice"), await logged_in(browsers, "bob")
    tab_c = await logged_in(browsers, "carol")
    page_a, page_b, page_c = tab_a.page, tab_b.page, tab_c.page
    await sidebar_channel(page_a, "general").click()
    await sidebar_channel(page_b, "general").click()
    await expect(page_b.locator("#channel-title")).to_have_text("#general")

    # Alice sets the topic and renames from the room header; bob sees both at once.
    await page_a.get_by_role("button", name="Edit #general").click()
    dialog = page_a.get_by_role("dialog", name="Edit channel")
    await dialog.get_by_label("Topic").fill("launch on Friday")
    await dialog.get_by_label("Name", exact=True).fill("launch")
    await dialog.get_by_role("button", name="Save").click()
    await expect(dialog).to_be_hidden()
    await expect(page_a.locator("#channel-topic")).to_have_text("launch on Friday")
    await expect(page_b.locator("#channel-title")).to_have_text("#launch")
    await expect(page_b.locator("#channel-topic")).to_have_text("launch on Friday")
    await expect(sidebar_channel(page_b, "launch")).to_be_visible()
    # A name taken answers in the dialog.
    await page_a.get_by_role("button", name="Edit #launch").click()
    await dialog.get_by_label("Name", exact=True).fill("RANDOM")
    await dialog.get_by_role("button", name="Save").click()
    await expect(dialog.locator("#edit-error")).to_contain_text("exists already")
    await dialog.get_by_role("button", name="Cancel").click()

    # Archived: read-only, for bob as well; alice, its creator, unarchives it.
    assert (await admin.post(f"/api/channels/{general}/archive")).status == 200
    await expect(page_b.locator("#archived-note")).to_be_visible()
    await expect(page_b.get_by_label("Message", exact=True)).to_be_disabled()
    await expect(page_b.locator("#edit-channel")).to_be_hidden()  # neither creator nor admin
    await page_a.get_by_role("button", name="Edit #launch").click()
    await expect(dialog.locator("#edit-archived")).to_be_visible()
    await expect(dialog.get_by_label("Name", exact=True)).to_be_disabled()
    await expect(dialog.get_by_role("button", name="Delete channel…")).to_be_hidden()
    await dialog.get_by_role("button", name="Unarchive channel").click()
    await expect(dialog).to_be_hidden()
    await expect(page_b.get_by_label("Message", exact=True)).to_be_enabled()
    await expect(page_b.locator("#archived-note")).to_be_hidden()

    # Deleted: gone from the lists of its members and of carol's open browser.
    await page_c.get_by_role("button", name="Browse").click()
    browse_c = page_c.get_by_role("dialog", name="Browse channels")
    await expect(browse_c.get_by_role("button", name="Join #doomed")).to_be_visible()
    await sidebar_channel(page_b, "doomed").click()
    await expect(page_b.locator("#channel-title")).to_have_text("#doomed")
    assert (await admin.delete(f"/api/channels/{doomed}")).status == 204
    await expect(sidebar_channel(page_b, "doomed")).to_have_count(0)
    await expect(sidebar_channel(page_a, "doomed")).to_have_count(0)
    await expect(browse_c.get_by_role("button", name="Join #doomed")).to_have_count(0)
    await expect(page_b.locator("#channel-title")).not_to_have_text("#doomed")
    for tab in (tab_a, tab_b, tab_c):
        tab.assert_no_problems()


async def test_an_admin_archives_and_deletes_from_the_edit_dialog(
    browsers: Browsers, people: People
) -> None:
    await people.create("adam", role="admin")  # the first is the workspace's owner
    alice = await people.create("alice")
    scratch = await make_channel(alice, "scratch")
    await make_channel(alice, "general")
    tab_admin, tab_a = await logged_in(browsers, "adam"), await logged_in(browsers, "alice")
    page, page_a = tab_admin.page, tab_a.page
    await sidebar_channel(page_a, "scratch").click()

    # The admin is in no channel yet: he joins it from the browser.
    await page.get_by_role("button", name="Browse").click()
    await page.get_by_role("button", name="Join #scratch").click()
    await expect(page.locator("#channel-title")).to_have_text("#scratch")
    await page.get_by_role("button", name="Edit #scratch").click()
    dialog = page.get_by_role("dialog", name="Edit channel")
    await dialog.get_by_role("button", name="Archive channel").click()
    await expect(page_a.locator("#archived-note")).to_be_visible()
    await expect(page_a.locator("#my-channels .channel.archived")).to_have_count(1)

    await page.get_by_role("button", name="Edit #scratch").click()
    await dialog.get_by_role("button", name="Delete channel…").click()
    await expect(dialog.locator("#edit-delete-text")).to_contain_text("Delete #scratch")
    await dialog.get_by_role("button", name="Delete for good").click()
    await expect(dialog).to_be_hidden()
    await expect(page.locator("#channel-title")).to_have_text("No channel")
    await expect(sidebar_channel(page_a, "scratch (archived)")).to_have_count(0)
    await expect(page_a.locator("#channel-title")).to_have_text("#general")
    response = await alice.get(f"/api/channels/{scratch}")
    assert response.status == 404
    for tab in (tab_admin, tab_a):
        tab.assert_no_problems()


async def test_on_a_phone_the_dialogs_open_from_the_drawer(
    browsers: Browsers, people: People
) -> None:
    alice = await people.create("alice")
    await people.create("bob")
    await make_channel(alice, "general")
    await make_channel(alice, "design", topic="pixels and type")
    tab = await browsers.tab(**SIZES["phone"])
    await tab.login("bob")
    page = tab.page
    menu = page.get_by_role("button", name="Channels")
    drawer = page.get_by_role("navigation", name="Workspaces and channels")

    # Browse and join from the drawer: the dialog closes it, the channel opens full width.
    await menu.click()
    await expect(drawer).to_be_visible()
    await drawer.get_by_role("button", name="Browse").click()
    dialog = page.get_by_role("dialog", name="Browse channels")
    await dialog.get_by_label("Search channels").fill("pix")
    await dialog.get_by_role("button", name="Join #design").click()
    await expect(dialog).to_be_hidden()
    await expect(drawer).to_be_hidden()
    await expect(page.locator("#channel-title")).to_have_text("#design")
    await expect(page.locator("#channel-topic")).to_have_text("pixels and type")

    # A member of a public channel edits its topic from the room's header.
    await page.get_by_role("button", name="Edit #design").click()
    edit = page.get_by_role("dialog", name="Edit channel")
    await edit.get_by_label("Topic").fill("pixels, type and colour")
    await edit.get_by_role("button", name="Save").click()
    await expect(edit).to_be_hidden()
    await expect(page.locator("#channel-topic")).to_have_text("pixels, type and colour")

    # A direct message started from the drawer.
    await menu.click()
    await drawer.get_by_role("button", name="New direct message").click()
    start = page.get_by_role("dialog", name="New direct message")
    await start.get_by_label("alice (alice)").check()
    await start.get_by_role("button", name="Start conversation").click()
    await expect(start).to_be_hidden()
    await expect(page.locator("#channel-title")).to_have_text("alice")
    tab.assert_no_problems()
