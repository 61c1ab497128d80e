"""Browser tests: Debian's chromium driven by async Playwright, inside pytest-aiohttp's loop.

One chromium per test (about half a second to start): a longer-lived browser would have
to outlive the test's event loop, which the async API does not allow. The browser is
the system one, /usr/bin/chromium (``.ci/test`` apt-installs it); Playwright never
downloads one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from axe_playwright_python.async_playwright import Axe
from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Response,
    async_playwright,
)
from playwright.async_api import expect as pw_expect

from support.people import PASSWORD

CHROMIUM = os.environ.get("ECHORA_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
LAUNCH_ARGS = ["--disable-gpu", "--disable-background-networking"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
# Generous for a loaded 2-core CI machine; every wait is for a visible state, not a sleep.
EXPECT_TIMEOUT_MS = 10_000

pw_expect.set_options(timeout=EXPECT_TIMEOUT_MS)
expect = pw_expect


# The window sizes the client is checked at.
SIZES = {
    "desktop": {"viewport": {"width": 1280, "height": 800}},
    "phone": {"viewport": {"width": 390, "height": 844}, "has_touch": True, "is_mobile": True},
}


@dataclass
class Tab:
    """One browser context (its own cookies) with one page, and what went wrong in it."""

    context: BrowserContext
    page: Page
    base_url: str
    problems: list[str] = field(default_factory=list)

    async def login(self, username: str, password: str = PASSWORD) -> None:
        page = self.page
        await page.goto(self.base_url)
        await page.get_by_label("Username").fill(username)
        await page.get_by_label("Password").fill(password)
        await page.get_by_role("button", name="Log in").click()
        await self.ready()

    async def ready(self) -> None:
        """The chat view is up: live, and its channel (if any) shown with its history."""
        page = self.page
        await expect(page.locator("#chat-view")).to_be_visible()
        await expect(page.locator("#room")).not_to_have_attribute("aria-busy", "true")
        await expect(page.locator("#connection")).to_have_attribute("data-state", "open")

    def assert_no_problems(self) -> None:
        """No uncaught error, console error or CSP violation happened on the page."""
        assert not self.problems, self.problems


class Browsers:
    """Opens tabs on one chromium; the fixture closes everything."""

    def __init__(self, browser: Browser, base_url: str) -> None:
        self.browser = browser
        self.base_url = base_url
        self.tabs: list[Tab] = []

    async def tab(self, **context_options: Any) -> Tab:
        options = {"accept_downloads": True, "viewport": {"width": 1200, "height": 800}}
        context = await self.browser.new_context(**{**options, **context_options})
        page = await context.new_page()
        tab = Tab(context, page, self.base_url)

        def on_console(message: ConsoleMessage) -> None:
            if message.type == "error" and not _expected_console_error(message.text):
                tab.problems.append(f"console: {message.text}")

        def on_response(response: Response) -> None:
            path = urlsplit(response.url).path
            if response.status >= 400 and (path == "/" or path.startswith("/static/")):
                tab.problems.append(f"{response.status} for {response.url}")

        page.on("console", on_console)
        page.on("response", on_response)
        page.on("pageerror", lambda exc: tab.problems.append(f"pageerror: {exc}"))
        self.tabs.append(tab)
        return tab


def _expected_console_error(text: str) -> bool:
    # Chromium logs every non-2xx fetch/XHR as a console error: the refused login or
    # upload a test provokes on purpose, the 401 of the first /api/me, and a socket cut
    # by the server are the app working, not failing. (The client's own files are
    # checked by status in on_response instead.)
    return "Failed to load resource" in text or "WebSocket connection to" in text


@contextlib.asynccontextmanager
async def open_browsers(base_url: str) -> AsyncIterator[Browsers]:
    """Chromium for one test, against the app at ``base_url`` (a test module wraps this in
    its ``browsers`` fixture with the server it runs)."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no chromium at {CHROMIUM} (apt-get install chromium)")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS
        )
        try:
            yield Browsers(browser, base_url)
        finally:
            await browser.close()


async def open_tab(browsers: Browsers, size: str, username: str, **options: Any) -> Tab:
    """A tab at one of ``SIZES`` (plus any context options), logged in as ``username``."""
    tab = await browsers.tab(**SIZES[size], **options)
    await tab.login(username)
    return tab


DOCS_SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


async def screenshot(page: Page, name: str) -> None:
    """Save the page as ``test-artifacts/screenshots/<name>`` on every run; with
    ECHORA_DOCS_SCREENSHOTS=1 also as ``docs/screenshots/<name>``, the pictures the README
    shows (refresh them so whenever the client's looks change)."""
    await page.screenshot(path=artifact_path(f"screenshots/{name}"))
    if os.environ.get("ECHORA_DOCS_SCREENSHOTS") == "1":
        DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=DOCS_SCREENSHOTS / name)


def artifact_path(name: str) -> Path:
    """Where a test saves a file for people to look at (``name`` may hold a folder)."""
    path = ARTIFACTS / name
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


async def assert_accessible(page: Page, view: str) -> None:
    """No axe violation in the light theme nor in the dark one, each as the system's setting
    (prefers-color-scheme); the page is left in the light one."""
    for scheme in ("dark", "light"):
        await page.emulate_media(color_scheme=scheme)
        results = await Axe().run(page)
        assert results.violations_count == 0, f"{view}, {scheme}:\n{results.generate_report()}"
