"""The client fitted to the reader: the sidebar as a drawer on a phone, light and dark
themes (the system's, or the reader's choice), file cards beside images, and the image
viewer stepping through a channel's images and zooming to actual size.

Every run saves screenshots of the chat view, the phone layout and the dark theme under
test-artifacts/screenshots/.
"""

from __future__ import annotations

import io
from typing import Any

import pytest
from PIL import Image
from playwright.async_api import Page
from support.browser import (
    SIZES,
    Browsers,
    artifact_path,
    assert_accessible,
    expect,
    open_tab,
    screenshot,
)
from support.chat import make_channel, post
from support.people import People, Person

LIGHT_BG = "rgb(246, 247, 249)"
DARK_BG = "rgb(17, 20, 24)"


@pytest.fixture
def config_overrides() -> dict[str, Any]:
    return {"max_upload_bytes": 4 * 1024 * 1024}


def png(width: int, height: int, colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, "PNG")
    return out.getvalue()


async def upload(person: Person, name: str, data: bytes) -> str:
    response = await person.post(
        f"/api/upload?filename={name}&workspace_id={person.workspace_id}", data=data
    )
    body = await response.json()
    assert response.status == 201, body
    return str(body["attachments"][0]["id"])


async def post_files(
    person: Person, channel_id: int, content: str, *files: tuple[str, bytes]
) -> None:
    ids = [await upload(person, name, data) for name, data in files]
    await post(person, channel_id, content, attachment_ids=ids)


async def background(page: Page) -> str:
    return str(await page.evaluate("getComputedStyle(document.body).backgroundColor"))


async def busy_channel(alice: Person, bob: Person) -> int:
    """A channel with some of everything the log shows: groups, Markdown, links, files."""
    channel_id = int((await make_channel(alice, "general", topic="Plans and news"))["id"])
    assert (await bob.post(f"/api/channels/{channel_id}/join")).status == 200
    morning = await post(alice, channel_id, "Morning! The **release** is *today*.")
    for who, emoji in ((bob, "🎉"), (alice, "🎉"), (bob, "👍")):
        response = await who.request("PUT", f"/api/messages/{morning['id']}/reactions/{emoji}")
        assert response.status == 201, await response.text()
    await post(alice, channel_id, "Notes at https://example.com/notes and `make release`.")
    await post(bob, channel_id, "Steps:\n```\nmake test\nmake release\n```")
    await post_files(
        bob,
        channel_id,
        "The banner and the checklist",
        ("banner.png", png(900, 600, (36, 84, 197))),
        ("checklist.txt", b"1. test\n2. release\n"),
    )
    return channel_id


async def test_phone_sidebar_is_a_drawer(browsers: Browsers, people: People) -> None:
    alice, bob = await people.create("alice"), await people.create("bob")
    await busy_channel(alice, bob)
    await make_channel(alice, "random")
    tab = await open_tab(browsers, "phone", "alice")
    page = tab.page
    menu = page.get_by_role("button", name="Channels")
    sidebar = page.get_by_role("navigation", name="Workspaces and channels")
    await expect(page.locator("#channel-title")).to_have_text("#general")
    await expect(sidebar).to_be_hidden()
    await expect(menu).to_have_attribute("aria-expanded", "false")
    composer = await page.locator("#composer").bounding_box()
    assert composer and composer["x"] == 0 and composer["width"] == 390  # the full width
    await screenshot(page, "phone-layout.png")

    # Opened: focus on the current channel, the page behind inert; Escape closes it.
    await menu.click()
    await expect(sidebar).to_be_visible()
    await expect(sidebar).to_be_in_viewport(ratio=1)
    await expect(menu).to_have_attribute("aria-expanded", "true")
    await expect(page.get_by_role("button", name="general", exact=True)).to_be_focused()
    await expect(page.locator("#room")).to_have_attribute("inert", "")
    await page.wait_for_timeout(300)  # the slide-in, for the picture
    await page.screenshot(path=artifact_path("screenshots/phone-drawer.png"))
    await assert_accessible(page, "phone drawer")
    await page.keyboard.press("Escape")
    await expect(sidebar).to_be_hidden()
    await expect(menu).to_be_focused()
    assert await page.locator("#room").get_attribute("inert") is None

    # Its Close button and the backdrop close it too; picking a channel closes it and opens
    # the channel.
    await menu.click()
    await page.get_by_role("button", name="Close the channel list").click()
    await expect(sidebar).to_be_hidden()
    await expect(menu).to_be_focused()
    await menu.click()
    await expect(sidebar).to_be_visible()
    await page.mouse.click(380, 400)  # beside the drawer: the backdrop
    await expect(sidebar).to_be_hidden()
    await menu.click()
    await page.get_by_role("button", name="random", exact=True).click()
    await expect(sidebar).to_be_hidden()
    await expect(page.locator("#channel-title")).to_have_text("#random")
    await expect(page.get_by_label("Message", exact=True)).to_be_focused()
    tab.assert_no_problems()


async def test_desktop_keeps_the_sidebar_as_a_column(browsers: Browsers, people: People) -> None:
    alice, bob = await people.create("alice"), await people.create("bob")
    await busy_channel(alice, bob)
    tab = await open_tab(browsers, "desktop", "alice")
    page = tab.page
    await expect(page.get_by_role("navigation", name="Workspaces and channels")).to_be_visible()
    await expect(page.get_by_role("button", name="Channels")).to_be_hidden()
    await expect(page.locator("#drawer-close")).to_be_hidden()
    await expect(page.locator(".attachment.image img")).to_have_js_property("complete", True)
    # The newest message in view: the log stays pinned to the bottom as it fills.
    last = page.locator("#message-list > li").last
    await expect(last).to_be_in_viewport(ratio=1)
    await page.mouse.move(130, 600)  # over the sidebar: no message's toolbar shown
    await screenshot(page, "chat-view.png")
    await assert_accessible(page, "chat view")
    tab.assert_no_problems()


async def test_dark_mode_follows_the_system_or_the_choice(
    browsers: Browsers, people: People, size: str
) -> None:
    alice, bob = await people.create("alice"), await people.create("bob")
    await busy_channel(alice, bob)
    tab = await open_tab(browsers, size, "alice", color_scheme="dark")
    page = tab.page
    theme = page.get_by_label("Theme")
    body = page.locator("body")
    await expect(theme).to_have_value("system")
    await expect(body).to_have_css("background-color", DARK_BG)  # as the system says
    await expect(page.locator(".attachment.image img")).to_have_js_property("complete", True)
    await screenshot(page, f"dark-mode-{size}.png")

    # A choice overrides the system's and is remembered.
    await theme.select_option("light")
    await expect(body).to_have_css("background-color", LIGHT_BG)
    await page.reload()
    await tab.ready()
    await expect(theme).to_have_value("light")
    await expect(body).to_have_css("background-color", LIGHT_BG)
    await page.emulate_media(color_scheme="light")
    await theme.select_option("dark")
    await expect(body).to_have_css("background-color", DARK_BG)
    await expect(page.locator(".message .content").first).to_have_css("color", "rgb(230, 233, 239)")

    # Back to the system's: it follows the system as it changes.
    await theme.select_option("system")
    await expect(body).to_have_css("background-color", LIGHT_BG)
    await page.emulate_media(color_scheme="dark")
    await expect(body).to_have_css("background-color", DARK_BG)
    assert await page.evaluate("localStorage.getItem('echora.theme')") is None
    await page.reload()
    await tab.ready()
    await expect(body).to_have_css("background-color", DARK_BG)
    tab.assert_no_problems()


async def test_the_login_view_is_accessible_in_both_themes(browsers: Browsers) -> None:
    tab = await browsers.tab()
    await tab.page.goto(tab.base_url)
    await expect(tab.page.get_by_role("heading", name="Log in")).to_be_visible()
    await assert_accessible(tab.page, "login view")
    tab.assert_no_problems()


async def test_file_cards_keep_their_height_beside_images(
    browsers: Browsers, people: People, size: str
) -> None:
    alice, bob = await people.create("alice"), await people.create("bob")
    await busy_channel(alice, bob)
    tab = await open_tab(browsers, size, "alice")
    page = tab.page
    image = await page.locator(".attachment.image").bounding_box()
    card = await page.locator(".file-card").bounding_box()
    assert image and card
    assert image["height"] > 150
    assert card["height"] < 90, card  # its own height, not the image's


async def test_the_image_viewer_steps_through_images_and_zooms(
    browsers: Browsers, people: People, size: str
) -> None:
    alice = await people.create("alice")
    channel_id = int((await make_channel(alice, "photos"))["id"])
    await post_files(alice, channel_id, "first", ("one.png", png(2400, 1600, (200, 40, 40))))
    await post(alice, channel_id, "no image here")
    await post_files(
        alice,
        channel_id,
        "two more",
        ("two.png", png(640, 480, (40, 160, 40))),
        ("notes.txt", b"not an image"),
        ("three.png", png(480, 640, (40, 40, 200))),
    )
    tab = await open_tab(browsers, size, "alice")
    page = tab.page
    dialog = page.locator("#image-viewer")
    title = page.locator("#image-viewer-title")
    position = page.locator("#image-viewer-position")
    prev = page.get_by_role("button", name="Previous image")
    next_ = page.get_by_role("button", name="Next image")
    zoom = page.get_by_role("button", name="Actual size")
    img = page.locator("#image-viewer-img")

    await page.get_by_role("button", name="Open one.png full size").click()
    await expect(dialog).to_be_visible()
    await expect(title).to_have_text("one.png")
    await expect(position).to_have_text("1 of 3")
    await expect(prev).to_be_disabled()
    await expect(img).to_have_js_property("complete", True)
    await assert_accessible(page, "image viewer")

    # Fitted to the window at first; actual size (2400 px) by the button, fitted by a click.
    fitted = await img.bounding_box()
    assert fitted and fitted["width"] < SIZES[size]["viewport"]["width"]
    await zoom.click()
    await expect(zoom).to_have_attribute("aria-pressed", "true")
    await expect(img).to_have_js_property("clientWidth", 2400)
    await page.screenshot(path=artifact_path(f"screenshots/image-viewer-zoomed-{size}.png"))
    await img.click(position={"x": 20, "y": 20})
    await expect(zoom).to_have_attribute("aria-pressed", "false")
    assert (await img.bounding_box()) == fitted

    # Arrow keys and the buttons step through the channel's images, not its other files.
    await page.keyboard.press("ArrowRight")
    await expect(title).to_have_text("two.png")
    await expect(position).to_have_text("2 of 3")
    await expect(prev).to_be_enabled()
    await next_.click()
    await expect(title).to_have_text("three.png")
    await expect(position).to_have_text("3 of 3")
    await expect(next_).to_be_disabled()
    await expect(prev).to_be_focused()  # the button pressed is disabled now
    await page.keyboard.press("ArrowRight")  # the last one: stays
    await expect(title).to_have_text("three.png")
    await page.screenshot(path=artifact_path(f"screenshots/image-viewer-{size}.png"))
    await page.keyboard.press("ArrowLeft")
    await expect(title).to_have_text("two.png")
    await expect(img).to_have_attribute("alt", "two.png")

    # Closing gives the focus to the thumbnail of the image shown last.
    await page.keyboard.press("Escape")
    await expect(dialog).to_be_hidden()
    await expect(page.get_by_role("button", name="Open two.png full size")).to_be_focused()
    tab.assert_no_problems()
