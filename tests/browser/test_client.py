"""The browser client at ``/``, driven in Debian's chromium against the real app.

Every wait is on something the page shows (Playwright's ``expect`` polls), never a sleep.
Uploads are throttled through the DevTools protocol where a test needs to see them in
progress; the server itself is never stubbed.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import random
import re
import shutil
import wave
from typing import Any

import pytest
from aiohttp import WSCloseCode
from aiohttp.test_utils import TestClient
from PIL import Image, ImageDraw
from playwright.async_api import Locator, Page, WebSocket, WebSocketRoute
from support.browser import (
    EXPECT_TIMEOUT_MS,
    Browsers,
    Tab,
    artifact_path,
    assert_accessible,
    expect,
)
from support.people import People, Person

from echora_server.config import Config
from echora_server.realtime.hub import HUB
from echora_server.storage.local.tempfile import TEMP_DIR

KiB = 1024
MiB = 1024 * KiB
UPLOAD_LIMIT = 2 * MiB
# Slow enough that a 1.5 MiB upload takes about half a second and reports progress.
UPLOAD_BYTES_PER_SECOND = 3 * MiB


@pytest.fixture
def config_overrides() -> dict[str, Any]:
    # One test posts 60 messages of history at once.
    return {"max_upload_bytes": UPLOAD_LIMIT, "message_rate_burst": 100}


# ----- files -----


def png_bytes(width: int = 640, height: int = 480) -> bytes:
    image = Image.new("RGB", (width, height), (36, 84, 197))
    draw = ImageDraw.Draw(image)
    draw.ellipse((60, 60, width - 60, height - 60), fill=(240, 190, 30))
    draw.rectangle((width // 2 - 40, 20, width // 2 + 40, height - 20), fill=(30, 140, 80))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def wav_bytes(seconds: float = 2.0, rate: int = 8000) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        rng = random.Random(1)
        w.writeframes(
            b"".join(
                rng.randint(-3000, 3000).to_bytes(2, "little", signed=True)
                for _ in range(int(seconds * rate))
            )
        )
    return out.getvalue()


def file_payload(name: str, mime: str, data: bytes) -> dict[str, Any]:
    return {"name": name, "mimeType": mime, "buffer": data}


# ----- page helpers -----


async def make_channel(person: Person, name: str) -> int:
    response = await person.post(
        "/api/channels", json={"workspace_id": person.workspace_id, "name": name}
    )
    assert response.status == 201, await response.text()
    return int((await response.json())["id"])


async def join(person: Person, channel_id: int) -> None:
    response = await person.post(f"/api/channels/{channel_id}/join")
    assert response.status == 200, await response.text()


async def history(person: Person, channel_id: int) -> list[dict[str, Any]]:
    response = await person.get(f"/api/channels/{channel_id}/messages")
    assert response.status == 200, await response.text()
    return list((await response.json())["messages"])


async def throttle_uploads(tab: Tab, bytes_per_second: int) -> None:
    cdp = await tab.context.new_cdp_session(tab.page)
    await cdp.send("Network.enable")
    await cdp.send(
        "Network.emulateNetworkConditions",
        {
            "offline": False,
            "latency": 0,
            "downloadThroughput": -1,
            "uploadThroughput": bytes_per_second,
        },
    )


async def watch_progress(page: Page) -> None:
    """Record every value each upload's <progress> takes, by its accessible name."""
    await page.evaluate(
        """() => {
          window.progressSeen = {};
          new MutationObserver((records) => {
            for (const r of records) {
              const bar = r.target;
              if (bar.tagName !== "PROGRESS") continue;
              const name = bar.getAttribute("aria-label");
              (window.progressSeen[name] ||= []).push(bar.value);
            }
          }).observe(document.querySelector("#pending"), {
            subtree: true, attributes: true, attributeFilter: ["value"],
          });
        }"""
    )


async def data_transfer(page: Page, name: str, mime: str, data: bytes) -> Any:
    """A DataTransfer holding one file, as a drag from the desktop or the clipboard has."""
    return await page.evaluate_handle(
        """([b64, name, type]) => {
          const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
          const transfer = new DataTransfer();
          transfer.items.add(new File([bytes], name, { type }));
          return transfer;
        }""",
        [base64.b64encode(data).decode(), name, mime],
    )


async def paste_file(page: Page, name: str, mime: str, data: bytes) -> None:
    transfer = await data_transfer(page, name, mime, data)
    await page.locator("#message-input").focus()
    await page.evaluate(
        """(transfer) => {
          const event = new ClipboardEvent("paste", {
            clipboardData: transfer, bubbles: true, cancelable: true,
          });
          document.activeElement.dispatchEvent(event);
        }""",
        transfer,
    )


async def wait_for(locator: Locator, predicate: str) -> None:
    """Wait until ``predicate`` (JavaScript, given the element) is true."""
    handle = await locator.element_handle()
    await locator.page.wait_for_function(predicate, arg=handle, timeout=EXPECT_TIMEOUT_MS)


def pending(page: Page, name: str) -> Any:
    return page.locator(".pending-item").filter(has_text=name)


def message_with(page: Page, text: str) -> Any:
    return page.locator("#message-list > li").filter(has_text=text)


# ----- tests -----


async def test_log_in_and_out(browsers: Browsers, people: People) -> None:
    await people.create("alice")
    tab = await browsers.tab()
    page = tab.page
    await page.goto(tab.base_url)
    await expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    await assert_accessible(page, "login view")

    await page.get_by_label("Username").fill("alice")
    await page.get_by_label("Password").fill("not the password")
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("alert")).to_have_text("Wrong username or password.")
    await expect(page.get_by_label("Password")).to_be_focused()

    await tab.login("alice")
    await expect(page.locator("#me-name")).to_have_text("alice")
    await expect(page.locator("#connection")).to_contain_text("Connected")
    await page.reload()  # the session cookie keeps us in
    await tab.ready()

    await page.get_by_role("button", name="Log out").click()
    await expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    await page.reload()
    await expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    tab.assert_no_problems()


async def test_files_by_button_drop_and_paste_reach_the_other_page(
    browsers: Browsers, people: People
) -> None:
    alice, bob = await people.create("alice"), await people.create("bob")
    channel_id = await make_channel(alice, "general")
    await join(bob, channel_id)
    tab_a, tab_b = await browsers.tab(), await browsers.tab()
    await tab_a.login("alice")
    await tab_b.login("bob")
    page_a, page_b = tab_a.page, tab_b.page
    await throttle_uploads(tab_a, UPLOAD_BYTES_PER_SECOND)
    await watch_progress(page_a)

    report = random.Random(7).randbytes(1536 * KiB)
    report_name = "données 2026 (final).bin"
    notes = b"Agenda\n1. <b>files</b> & links\n"
    picture = png_bytes()

    # 1. The button opens the (hidden) file input.
    async with page_a.expect_file_chooser() as chooser:
        await page_a.get_by_role("button", name="Attach files").click()
    await (await chooser.value).set_files(
        file_payload(report_name, "application/octet-stream", report)
    )
    item = pending(page_a, report_name)
    await expect(item.get_by_role("progressbar", name=f"Upload of {report_name}")).to_be_visible()
    await expect(item).to_contain_text("1.5 MB")  # no preview for a non-image: name and size
    await expect(page_a.get_by_role("button", name="Send")).to_be_disabled()
    await expect(page_a.locator("#composer-hint")).to_contain_text("to finish")
    await expect(item.get_by_role("button", name=f"Cancel upload of {report_name}")).to_be_visible()

    # 2. A file dropped on the composer (which shows that it takes drops).
    composer = page_a.locator("#composer")
    transfer = await data_transfer(page_a, "notes.txt", "text/plain", notes)
    await composer.dispatch_event("dragenter", {"dataTransfer": transfer})
    await composer.dispatch_event("dragover", {"dataTransfer": transfer})
    await expect(page_a.get_by_text("Drop files to attach them")).to_be_visible()
    await expect(composer).to_have_class("composer dropping")
    await composer.dispatch_event("drop", {"dataTransfer": transfer})
    await expect(page_a.get_by_text("Drop files to attach them")).to_be_hidden()

    # 3. A pasted image, previewed as a thumbnail.
    await paste_file(page_a, "image.png", "image/png", picture)
    await expect(pending(page_a, "image.png").locator("img.preview")).to_be_visible()

    for name in (report_name, "notes.txt", "image.png"):
        bar = page_a.get_by_role("progressbar", name=f"Upload of {name}")
        await expect(bar).to_have_attribute("value", "100")
        await expect(pending(page_a, name)).to_contain_text("Uploaded")
    seen = await page_a.evaluate("window.progressSeen")
    for name, values in seen.items():
        assert values == sorted(values) and values[-1] == 100, (name, values)
    assert any(0 < v < 100 for v in seen[f"Upload of {report_name}"]), seen

    await page_a.get_by_label("Message", exact=True).fill("Files for the meeting")
    await expect(page_a.get_by_role("button", name="Send")).to_be_enabled()
    await page_a.keyboard.press("Enter")
    await expect(page_a.locator(".pending-item")).to_have_count(0)

    # Page B: the image inline (lazy, sized up front), the other files as cards.
    message = message_with(page_b, "Files for the meeting")
    await expect(message).to_be_visible()
    image = message.get_by_role("img", name="image.png")
    await expect(image).to_have_attribute("loading", "lazy")
    await expect(image).to_have_attribute("width", "360")
    await expect(image).to_have_attribute("height", "270")
    await wait_for(image, "img => img.complete && img.naturalWidth > 0")
    for name in (report_name, "notes.txt"):
        card = message.locator(".file-card").filter(has_text=name)
        await expect(card).to_be_visible()
        await expect(card.get_by_role("link", name=f"Download {name}")).to_be_visible()
    await expect(message.locator(".file-card").filter(has_text=report_name)).to_contain_text(
        "1.5 MB"
    )

    # Full size by keyboard; Escape closes and gives focus back.
    opener = message.get_by_role("button", name="Open image.png full size")
    await opener.focus()
    await page_b.keyboard.press("Enter")
    viewer = page_b.get_by_role("dialog", name="image.png")
    await expect(viewer).to_be_visible()
    full = viewer.get_by_role("img", name="image.png")
    await wait_for(full, "img => img.complete && img.naturalWidth === 640")
    await page_b.keyboard.press("Escape")
    await expect(viewer).to_be_hidden()
    await expect(opener).to_be_focused()

    # Downloading gives the stored name and the very bytes.
    async with page_b.expect_download() as downloading:
        await message.get_by_role("link", name=f"Download {report_name}").click()
    download = await downloading.value
    assert download.suggested_filename == report_name
    path = await download.path()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == hashlib.sha256(report).hexdigest()

    await page_b.mouse.move(0, 0)  # no hover highlight in the picture
    await page_b.screenshot(path=artifact_path("chat-view.png"))
    await assert_accessible(page_b, "chat view")
    await assert_accessible(page_a, "chat view (sender)")
    stored = (await history(alice, channel_id))[0]
    assert [a["filename"] for a in stored["attachments"]] == [report_name, "notes.txt", "image.png"]
    tab_a.assert_no_problems()
    tab_b.assert_no_problems()


async def test_oversize_file_shows_an_inline_error_and_sends_nothing(
    browsers: Browsers, people: People
) -> None:
    alice = await people.create("alice")
    channel_id = await make_channel(alice, "general")
    tab = await browsers.tab()
    await tab.login("alice")
    page = tab.page

    await page.locator("#file-input").set_input_files(
        file_payload("huge.bin", "application/octet-stream", bytes(UPLOAD_LIMIT + MiB))
    )
    item = pending(page, "huge.bin")
    await expect(item.get_by_role("alert")).to_have_text("Too large: files may be at most 2.0 MB.")
    await expect(item.get_by_role("progressbar")).to_be_hidden()
    await page.get_by_label("Message", exact=True).fill("with the big file")
    await expect(page.get_by_role("button", name="Send")).to_be_disabled()
    await expect(page.locator("#composer-hint")).to_have_text(
        "Retry or remove the files that failed before sending."
    )
    await page.keyboard.press("Enter")  # refused too
    assert await history(alice, channel_id) == []

    # Removing it frees the composer; the text alone goes out.
    await item.get_by_role("button", name="Remove huge.bin").click()
    await expect(item).to_have_count(0)
    await expect(page.get_by_label("Message", exact=True)).to_be_focused()
    await page.keyboard.press("Enter")
    await expect(message_with(page, "with the big file")).to_be_visible()
    [sent] = await history(alice, channel_id)
    assert sent["content"] == "with the big file" and sent["attachments"] == []
    tab.assert_no_problems()


async def test_cancelled_and_refused_uploads_are_not_sent(
    browsers: Browsers, people: People
) -> None:
    alice = await people.create("alice")
    channel_id = await make_channel(alice, "general")
    tab = await browsers.tab()
    await tab.login("alice")
    page = tab.page
    await throttle_uploads(tab, 256 * KiB)

    # Cancelled mid-way: gone from the composer, which is free again.
    await page.locator("#file-input").set_input_files(
        file_payload("slow.bin", "application/octet-stream", bytes(MiB))
    )
    item = pending(page, "slow.bin")
    await expect(item).to_contain_text("1.0 MB")
    await expect(item).to_contain_text("Uploading")
    await item.get_by_role("button", name="Cancel upload of slow.bin").click()
    await expect(item).to_have_count(0)
    await expect(page.locator("#composer-hint")).to_have_text("")

    # HTML that claims to be a PNG is refused by the server: said inline.
    await page.locator("#file-input").set_input_files(
        file_payload("cat.png", "image/png", b"<html><script>alert(1)</script></html>")
    )
    refused = pending(page, "cat.png")
    await expect(refused.get_by_role("alert")).to_have_text(
        "File type refused: its contents do not match its type."
    )
    await expect(page.get_by_role("button", name="Send")).to_be_disabled()
    await refused.get_by_role("button", name="Remove cat.png").click()
    await expect(refused).to_have_count(0)
    assert await history(alice, channel_id) == []
    tab.assert_no_problems()


async def test_storage_outage_shows_an_inline_error(
    config: Config, browsers: Browsers, people: People
) -> None:
    """A real fault, fast: the local store's temp directory turns into a file, so every
    write fails (S3 cut off answers the same 503, but only after the client's retries)."""
    alice = await people.create("alice")
    channel_id = await make_channel(alice, "general")
    tab = await browsers.tab()
    await tab.login("alice")
    page = tab.page
    temp_dir = config.files_dir / TEMP_DIR
    shutil.rmtree(temp_dir)
    temp_dir.write_bytes(b"")
    await page.locator("#file-input").set_input_files(
        file_payload("minutes.txt", "text/plain", b"nothing stored today")
    )
    item = pending(page, "minutes.txt")
    await expect(item.get_by_role("alert")).to_have_text(
        "File storage is unavailable right now; try again shortly."
    )
    await expect(page.get_by_role("button", name="Send")).to_be_disabled()

    temp_dir.unlink()
    temp_dir.mkdir()
    await item.get_by_role("button", name="Remove minutes.txt").click()
    await page.locator("#file-input").set_input_files(
        file_payload("minutes.txt", "text/plain", b"stored after all")
    )
    await expect(pending(page, "minutes.txt")).to_contain_text("Uploaded")
    await page.get_by_role("button", name="Send").click()
    await expect(page.locator("#message-list .file-card")).to_contain_text("minutes.txt")
    [sent] = await history(alice, channel_id)
    assert [a["filename"] for a in sent["attachments"]] == ["minutes.txt"]
    tab.assert_no_problems()


async def test_attachment_only_message_with_audio_that_seeks(
    browsers: Browsers, people: People
) -> None:
    alice = await people.create("alice")
    channel_id = await make_channel(alice, "general")
    tab = await browsers.tab()
    await tab.login("alice")
    page = tab.page
    ranges: list[int] = []
    page.on(
        "response",
        lambda r: ranges.append(r.status) if "/api/files/" in r.url else None,
    )

    await page.locator("#file-input").set_input_files(
        file_payload("tone.wav", "audio/wav", wav_bytes())
    )
    await expect(pending(page, "tone.wav")).to_contain_text("Uploaded")
    send = page.get_by_role("button", name="Send")
    await expect(send).to_be_enabled()
    await send.click()

    audio = page.locator("#message-list audio")
    await expect(audio).to_have_attribute("controls", "")
    await expect(audio).to_have_accessible_name("tone.wav")
    await wait_for(audio, "audio => audio.readyState > 0")
    duration = await audio.evaluate("a => a.seekable.length ? a.seekable.end(0) : 0")
    assert duration == pytest.approx(2.0, abs=0.1)
    await audio.evaluate(
        """(a) => new Promise((done) => {
          a.addEventListener("seeked", done, { once: true });
          a.currentTime = 1.5;
        })"""
    )
    assert 206 in ranges, ranges
    [sent] = await history(alice, channel_id)
    assert sent["content"] == "" and [a["filename"] for a in sent["attachments"]] == ["tone.wav"]
    tab.assert_no_problems()


async def test_reconnect_after_the_server_drops_the_socket_shows_what_was_missed(
    client: TestClient, browsers: Browsers, people: People
) -> None:
    alice, bob = await people.create("alice"), await people.create("bob")
    channel_id = await make_channel(alice, "general")
    await join(bob, channel_id)
    tab_a, tab_b = await browsers.tab(), await browsers.tab()
    await tab_a.login("alice")
    await tab_b.login("bob")
    page_a, page_b = tab_a.page, tab_b.page
    await page_a.get_by_label("Message", exact=True).fill("before the cut")
    await page_a.keyboard.press("Enter")
    await expect(message_with(page_b, "before the cut")).to_be_visible()

    [cut] = await history(alice, channel_id)
    sockets: list[tuple[str, list[dict[str, Any]]]] = []  # B's real sockets and their frames

    def on_websocket(ws: WebSocket) -> None:
        frames: list[dict[str, Any]] = []
        sockets.append((ws.url, frames))
        ws.on("framereceived", lambda payload: frames.append(json.loads(payload)))

    page_b.on("websocket", on_websocket)
    # Until "Reconnect now" is clicked, B's reconnects are refused before reaching the
    # server: what A sends then is a real gap, and the client's own retries cannot
    # reconnect (and hide the button) before the click, whatever the timing.
    await page_b.evaluate(
        """document.getElementById("reconnect").addEventListener(
            "click", () => { window.reconnectClicked = true; }, { capture: true })"""
    )

    async def hold_or_pass(route: WebSocketRoute) -> None:
        if await page_b.evaluate("window.reconnectClicked === true"):
            route.connect_to_server()
        else:
            await route.close(code=1013, reason="held by the test")

    await page_b.route_web_socket(re.compile(r"/api/ws"), hold_or_pass)
    await client.app[HUB].close_all(WSCloseCode.GOING_AWAY, "test drops every socket")
    status_b = page_b.locator("#connection")
    await expect(status_b).to_have_attribute("data-state", "waiting")
    await expect(status_b).to_contain_text("Reconnecting")
    for text in ("sent in between 1", "sent in between 2"):
        await page_a.get_by_label("Message", exact=True).fill(text)
        await page_a.keyboard.press("Enter")
        await expect(message_with(page_a, text)).to_be_visible()
    assert await message_with(page_b, "sent in between").count() == 0

    await page_b.get_by_role("button", name="Reconnect now").click()
    await expect(status_b).to_have_attribute("data-state", "open")
    await expect(status_b).to_contain_text("Connected")
    await expect(page_b.locator("#message-list > li")).to_have_count(3)
    texts = await page_b.locator("#message-list .content").all_text_contents()
    assert texts == ["before the cut", "sent in between 1", "sent in between 2"]
    # The reconnect asked for everything after the last message B had seen, and got it.
    [(url, frames)] = sockets
    assert f"after_id={cut['id']}" in url
    replayed = [f["message"]["content"] for f in frames if f["type"] == "message.created"]
    assert replayed[:2] == ["sent in between 1", "sent in between 2"], frames

    # And live delivery works again afterwards.
    await page_a.get_by_label("Message", exact=True).fill("after the cut")
    await page_a.keyboard.press("Enter")
    await expect(message_with(page_b, "after the cut")).to_be_visible()
    tab_a.assert_no_problems()
    tab_b.assert_no_problems()


async def test_channels_history_and_composer_keys(browsers: Browsers, people: People) -> None:
    alice, bob = await people.create("alice"), await people.create("bob")
    channel_id = await make_channel(alice, "random")
    for n in range(60):
        response = await alice.post(
            f"/api/channels/{channel_id}/messages", json={"content": f"old message {n:02d}"}
        )
        assert response.status == 201
    tab = await browsers.tab()
    await tab.login("bob")
    page = tab.page
    await expect(page.locator("#channel-title")).to_have_text("No channel")

    # Join by keyboard, from the channel browser.
    await page.get_by_role("button", name="Browse").focus()
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("dialog", name="Browse channels")).to_be_visible()
    await page.get_by_role("button", name="Join #random").focus()
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("dialog", name="Browse channels")).to_be_hidden()
    await expect(page.locator("#channel-title")).to_have_text("#random")
    log = page.get_by_role("log", name="#random")
    await expect(log.locator("#message-list > li")).to_have_count(50)
    await expect(log.locator("#message-list > li").last).to_contain_text("old message 59")
    await page.get_by_role("button", name="Load older messages").click()
    await expect(log.locator("#message-list > li")).to_have_count(60)
    await expect(log.locator("#message-list > li").first).to_contain_text("old message 00")
    await expect(page.get_by_role("button", name="Load older messages")).to_be_hidden()

    # Shift+Enter is a new line, Enter sends.
    box = page.get_by_label("Message", exact=True)
    await box.focus()
    await page.keyboard.type("first line")
    await page.keyboard.press("Shift+Enter")
    await page.keyboard.type("second line")
    await expect(box).to_have_value("first line\nsecond line")
    await page.keyboard.press("Enter")
    await expect(log.locator("#message-list > li").last.locator(".content")).to_have_text(
        "first line\nsecond line"
    )
    await expect(box).to_have_value("")

    # A new channel: created, joined, selected.
    create = page.get_by_role("dialog", name="New channel")
    await page.get_by_role("button", name="New channel").click()
    await create.get_by_label("Name", exact=True).fill("projects")
    await create.get_by_role("button", name="Create channel").click()
    await expect(create).to_be_hidden()
    await expect(page.locator("#channel-title")).to_have_text("#projects")
    await expect(page.get_by_role("button", name="projects", exact=True)).to_have_attribute(
        "aria-current", "page"
    )
    await page.get_by_role("button", name="New channel").click()
    await create.get_by_label("Name", exact=True).fill("Projects")
    await create.get_by_role("button", name="Create channel").click()
    await expect(page.locator("#create-channel-error")).to_be_visible()
    await expect(create).to_be_visible()  # kept open to correct the name
    assert bob.username == "bob"
    tab.assert_no_problems()


async def test_user_text_and_filenames_are_never_markup(browsers: Browsers, people: People) -> None:
    alice = await people.create("alice")
    channel_id = await make_channel(alice, "general")
    hostile = '<img src=x onerror="window.pwned=1"><b>bold</b>'
    tab = await browsers.tab()
    await tab.login("alice")
    page = tab.page
    await page.locator("#file-input").set_input_files(
        file_payload('<img src=x onerror="window.pwned=2">.txt', "text/plain", b"hi")
    )
    await expect(page.locator(".pending-item")).to_contain_text("Uploaded")
    await page.get_by_label("Message", exact=True).fill(hostile)
    await page.keyboard.press("Enter")
    message = page.locator("#message-list > li").first
    await expect(message.locator(".content")).to_have_text(hostile)
    await expect(message.locator(".file-name")).to_contain_text("onerror")
    assert await message.locator("b, .content img, .file-card img").count() == 0

    # An external link attachment: a link with its title as text, opened safely.
    response = await alice.post(
        f"/api/channels/{channel_id}/messages",
        json={
            "content": "",
            "links": [{"url": "https://example.com/spec?a=1&b=2", "title": "<i>The spec</i>"}],
        },
    )
    assert response.status == 201, await response.text()
    link = page.get_by_role("link", name="<i>The spec</i>")
    await expect(link).to_have_attribute("href", "https://example.com/spec?a=1&b=2")
    await expect(link).to_have_attribute("rel", "noopener noreferrer nofollow ugc")
    assert await page.locator("#message-list i").count() == 0
    assert await page.evaluate("window.pwned") is None
    assert len(await history(alice, channel_id)) == 2
    tab.assert_no_problems()
