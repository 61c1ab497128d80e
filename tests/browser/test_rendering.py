"""What the client draws for awkward cases: an "image" whose bytes do not decode is shown as
the file it is (no broken picture, no request to a made-up URL), and the channel one is in
keeps its colours under the pointer, in light and dark mode."""

from __future__ import annotations

from playwright.async_api import Request
from support.browser import Browsers, expect
from support.chat import channel_with, post
from support.people import People, Person

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


async def upload(person: Person, name: str, data: bytes) -> dict[str, object]:
    response = await person.post(
        f"/api/upload?filename={name}&workspace_id={person.workspace_id}", data=data
    )
    body = await response.json()
    assert response.status == 201, body
    attachment: dict[str, object] = body["attachments"][0]
    return attachment


async def test_an_image_that_does_not_decode_is_shown_as_a_file(
    browsers: Browsers, people: People
) -> None:
    alice = await people.create("alice")
    general = await channel_with(alice, name="general")
    broken = await upload(alice, "bad.png", PNG_SIGNATURE + b"not really an image")
    assert broken["mime_type"] == "image/png" and "thumbnail_url" not in broken
    await post(alice, general, "a picture?", attachment_ids=[broken["id"]])
    tab = await browsers.tab()
    requested: list[str] = []

    def on_request(request: Request) -> None:
        requested.append(request.url)

    tab.page.on("request", on_request)
    await tab.login("alice")
    await tab.ready()
    row = tab.page.locator("#message-list > li").filter(has_text="a picture?")
    await expect(row.locator(".file-card")).to_contain_text("bad.png")
    await expect(row.locator("img")).to_have_count(0)
    assert not [url for url in requested if url.endswith("/undefined")], requested
    assert any(url.endswith(str(broken["url"])) for url in requested)  # tried once, as a picture
    tab.problems[:] = [p for p in tab.problems if str(broken["url"]) not in p]
    tab.assert_no_problems()


async def test_the_current_channel_keeps_its_colours_under_the_pointer(
    browsers: Browsers, people: People
) -> None:
    alice = await people.create("alice")
    await channel_with(alice, name="general")
    await channel_with(alice, name="design")
    tab = await browsers.tab()
    page = tab.page
    await tab.login("alice")
    await tab.ready()
    current = page.locator('#my-channels button[aria-current="page"]')
    await expect(current).to_have_count(1)

    async def colours() -> list[str]:
        return list(
            await current.evaluate(
                "(el) => { const s = getComputedStyle(el); return [s.backgroundColor, s.color]; }"
            )
        )

    for scheme in ("light", "dark"):
        await page.emulate_media(color_scheme=scheme)
        await page.mouse.move(600, 400)
        still = await colours()
        await current.hover()
        assert await colours() == still, scheme
    tab.assert_no_problems()
