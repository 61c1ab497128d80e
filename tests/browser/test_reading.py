"""Reading the log in the browser: message text with links and a little Markdown (built as
DOM nodes, never as HTML), day headings, grouped messages, older history loaded by scrolling
up, and "Jump to latest" while reading back.

Old messages get their ``created_at`` set in the database: the server always stamps now.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from playwright.async_api import Locator, Page
from support.browser import SIZES, Browsers, Tab, artifact_path, assert_accessible, expect
from support.chat import channel_with, fetch, post
from support.people import People, Person

from echora_server.db.pool import POOL


@pytest.fixture
def config_overrides() -> dict[str, Any]:
    return {"message_rate_burst": 200}  # the history tests post 120 messages at once


def zone_in_daytime() -> str:
    """A time zone where it is between 02:00 and 22:00 now, so messages of the last hour are
    all of today there."""
    return "UTC" if 2 <= dt.datetime.now(dt.UTC).hour < 22 else "Pacific/Honolulu"


async def open_tab(browsers: Browsers, size: str, username: str, zone: str = "UTC") -> Tab:
    # A fixed zone and language, so "Today" and the date headings can be checked.
    tab = await browsers.tab(**SIZES[size], timezone_id=zone, locale="en-US")
    await tab.login(username)
    return tab


def rows(page: Page) -> Locator:
    return page.locator("#message-list > li")


def row(page: Page, text: str) -> Locator:
    return rows(page).filter(has_text=text)


async def backdate(person: Person, message_id: int, age: dt.timedelta) -> None:
    async with person.client.app[POOL].acquire() as conn:
        await conn.execute(
            "UPDATE messages SET created_at = now() - $2::interval WHERE id = $1", message_id, age
        )


# What the parser builds, as [tag, {attributes}, children...] trees (text as strings).
SERIALIZE = """async (cases) => {
  const { renderMarkup } = await import("/static/js/markup.js");
  const tree = (node) => node.nodeType === Node.TEXT_NODE ? node.data : [
    node.tagName.toLowerCase(),
    Object.fromEntries([...node.attributes].map((a) => [a.name, a.value])),
    ...[...node.childNodes].map(tree),
  ];
  return cases.map((text) => renderMarkup(text).map(tree));
}"""

LINK = {"target": "_blank", "rel": "noopener noreferrer"}
MARKUP_CASES: list[tuple[str, list[Any]]] = [
    ("plain words", ["plain words"]),
    (
        "**bold**, *italic* and `code`",
        [["strong", {}, "bold"], ", ", ["em", {}, "italic"], " and ", ["code", {}, "code"]],
    ),
    ("`**not bold** <b>`", [["code", {}, "**not bold** <b>"]]),
    (
        "**bold with *italic* inside**",
        [["strong", {}, "bold with ", ["em", {}, "italic"], " inside"]],
    ),
    ("2 * 3 * 4 and a*", ["2 * 3 * 4 and a*"]),
    ("\\*not italic\\*", ["*", "not italic", "*"]),
    (
        "see https://example.com/a_(b)?q=1&r=2.",
        [
            "see ",
            [
                "a",
                {"href": "https://example.com/a_(b)?q=1&r=2", **LINK},
                "https://example.com/a_(b)?q=1&r=2",
            ],
            ".",
        ],
    ),
    (
        "(http://example.org/x), then",
        ["(", ["a", {"href": "http://example.org/x", **LINK}, "http://example.org/x"], "), then"],
    ),
    (
        "**https://example.com**",
        [["strong", {}, ["a", {"href": "https://example.com/", **LINK}, "https://example.com"]]],
    ),
    (
        "javascript:alert(1) and [x](javascript:alert(2))",
        ["javascript:alert(1) and [x](javascript:alert(2))"],
    ),
    (
        "data:text/html,<script>x</script> vbscript:y",
        ["data:text/html,<script>x</script> vbscript:y"],
    ),
    ("https:// alone", ["https:// alone"]),
    ('<img src=x onerror="window.pwned=1">', ['<img src=x onerror="window.pwned=1">']),
    (
        "before\n```js\nconst a = '<b>';\n**x**\n```\nafter",
        [
            "before",
            [
                "pre",
                {"class": "code-block"},
                ["code", {"data-language": "js"}, "const a = '<b>';\n**x**"],
            ],
            "after",
        ],
    ),
    ("```one line```", [["pre", {"class": "code-block"}, ["code", {}, "one line"]]]),
    ("``` not closed", ["``` not closed"]),
]


async def test_the_markup_parser_builds_only_safe_nodes(browsers: Browsers, people: People) -> None:
    tab = await browsers.tab()
    await tab.page.goto(tab.base_url)
    got = await tab.page.evaluate(SERIALIZE, [text for text, _ in MARKUP_CASES])
    for (text, expected), actual in zip(MARKUP_CASES, got, strict=True):
        assert actual == expected, text
    tab.assert_no_problems()


TIMELINE = """async () => {
  const { continues, dayLabel } = await import("/static/js/timeline.js");
  const now = new Date("2026-03-10T12:00:00");
  const at = (iso, author = 1) => ({
    created_at: new Date(iso).toISOString(), author: { id: author },
  });
  return {
    labels: [
      "2026-03-10T00:00:01", "2026-03-09T23:59:59", "2026-03-01T08:00:00", "2025-12-31T08:00:00",
    ].map((iso) => dayLabel(new Date(iso).toISOString(), now)),
    groups: [
      continues(at("2026-03-10T10:00:00"), at("2026-03-10T10:05:00")),
      continues(at("2026-03-10T10:00:00"), at("2026-03-10T10:05:01")),
      continues(at("2026-03-10T10:00:00"), at("2026-03-10T10:01:00", 2)),
      continues(at("2026-03-09T23:58:00"), at("2026-03-10T00:01:00")),
      continues(null, at("2026-03-10T10:00:00")),
    ],
  };
}"""


async def test_day_labels_and_group_rules(browsers: Browsers) -> None:
    tab = await browsers.tab(timezone_id="Europe/Berlin", locale="en-US")
    await tab.page.goto(tab.base_url)
    got = await tab.page.evaluate(TIMELINE)
    assert got["labels"] == [
        "Today",
        "Yesterday",
        "Sunday, March 1",
        "Wednesday, December 31, 2025",
    ]
    # Five minutes at most, one author, one day (not across midnight), and something before.
    assert got["groups"] == [True, False, False, False, False]
    tab.assert_no_problems()


async def test_links_and_markdown_in_messages_are_nodes_not_html(
    browsers: Browsers, people: People
) -> None:
    alice = await people.create("alice")
    channel_id = await channel_with(alice)
    await post(
        alice, channel_id, "Read **the spec** at https://example.com/spec?a=1&b=2, *carefully*."
    )
    await post(alice, channel_id, "Run `make test` first:\n```\nmake test <all>\n```")
    await post(alice, channel_id, "[click](javascript:window.pwned=1) javascript:window.pwned=2")
    hostile = '<img src=x onerror="window.pwned=3"><a href="javascript:window.pwned=4">x</a>'
    await post(alice, channel_id, hostile)
    tab = await open_tab(browsers, "desktop", "alice")
    page = tab.page

    first = row(page, "the spec").locator(".content")
    await expect(first.locator("strong")).to_have_text("the spec")
    await expect(first.locator("em")).to_have_text("carefully")
    link = first.get_by_role("link", name="https://example.com/spec?a=1&b=2")
    await expect(link).to_have_attribute("href", "https://example.com/spec?a=1&b=2")
    await expect(link).to_have_attribute("target", "_blank")
    await expect(link).to_have_attribute("rel", "noopener noreferrer")
    await expect(first).to_have_text(
        "Read the spec at https://example.com/spec?a=1&b=2, carefully."
    )

    second = row(page, "make test").locator(".content")
    await expect(second.locator(":scope > code")).to_have_text("make test")
    await expect(second.locator("pre code")).to_have_text("make test <all>")

    third = row(page, "click").locator(".content")
    await expect(third).to_have_text("[click](javascript:window.pwned=1) javascript:window.pwned=2")
    fourth = row(page, "onerror").locator(".content")
    await expect(fourth).to_have_text(hostile)
    assert await page.locator("#message-list a").count() == 1  # the spec's link alone
    assert await page.locator("#message-list img, #message-list .content b").count() == 0
    await third.click()
    assert await page.evaluate("window.pwned") is None
    tab.assert_no_problems()


async def test_day_headings_and_groups_of_one_author(
    browsers: Browsers, people: People, size: str
) -> None:
    alice, bob = await people.create("alice"), await people.create("bob")
    channel_id = await channel_with(alice, bob)
    ages = [
        (alice, "ten days ago", dt.timedelta(days=10)),
        (alice, "yesterday first", dt.timedelta(days=1, minutes=3)),
        (alice, "yesterday again", dt.timedelta(days=1)),  # three minutes later: one group
        (bob, "today from bob", dt.timedelta(minutes=40)),
        (bob, "bob again", dt.timedelta(minutes=39)),
        (bob, "bob much later", dt.timedelta(minutes=20)),  # nineteen minutes on: a new group
        (alice, "alice now", dt.timedelta(minutes=1)),
    ]
    for person, text, age in ages:
        message = await post(person, channel_id, text)
        await backdate(person, message["id"], age)
    zone = zone_in_daytime()
    tab = await open_tab(browsers, size, "alice", zone)
    page = tab.page

    now = dt.datetime.now(ZoneInfo(zone))
    old = now - dt.timedelta(days=10)
    old_label = f"{old:%A}, {old:%B} {old.day}" + (f", {old.year}" if old.year != now.year else "")
    headings = page.locator("#message-list .day-divider")
    await expect(headings).to_have_text([old_label, "Yesterday", "Today"])
    await expect(page.get_by_role("heading", name="Yesterday", level=3)).to_be_visible()
    for text in ("ten days ago", "yesterday first", "today from bob"):
        await expect(row(page, text)).to_have_class(
            "message mine day-start" if "bob" not in text else "message day-start"
        )
    continued = ["yesterday again", "bob again"]
    for text in continued:
        await expect(row(page, text)).to_contain_class("continued")
        await expect(row(page, text).locator(".author")).not_to_be_in_viewport()
    for text in ("bob much later", "alice now"):
        await expect(row(page, text)).not_to_contain_class("continued")
        await expect(row(page, text).locator(".author")).to_be_visible()
    # Screen readers still hear who wrote each message.
    await expect(row(page, "bob again").locator(".author")).to_have_text("bob")

    # A live message continues the newest group; deleting the group's head hands the header on.
    await page.get_by_label("Message", exact=True).fill("alice once more")
    await page.keyboard.press("Enter")
    await expect(row(page, "alice once more")).to_contain_class("continued")
    head = await fetch(alice.client, "SELECT id FROM messages WHERE content = 'today from bob'")
    assert (await bob.delete(f"/api/messages/{head}")).status == 204
    await expect(row(page, "today from bob")).to_have_count(0)
    await expect(row(page, "bob again")).to_have_class("message day-start")
    await expect(headings).to_have_text([old_label, "Yesterday", "Today"])
    await page.mouse.move(0, 0)
    await page.screenshot(path=artifact_path(f"screenshots/days-and-groups-{size}.png"))
    tab.assert_no_problems()


async def text_top(page: Page, text: str, *, at_scroll_top: bool = False) -> float:
    """Where the text of the message showing ``text`` is, from the top of the log's view (or
    where it would be with the log scrolled to its top). Its header may go: the message before
    it, loaded now, can be of the same group."""
    content = row(page, text).locator(".content")
    return float(
        await content.evaluate(
            """(content, atScrollTop) => {
              const log = content.closest('#messages');
              const y = content.getBoundingClientRect().top - log.getBoundingClientRect().top;
              return atScrollTop ? y + log.scrollTop : y;
            }""",
            at_scroll_top,
        )
    )


async def test_older_history_by_scrolling_up_and_jump_to_latest(
    browsers: Browsers, people: People, size: str
) -> None:
    alice, bob = await people.create("alice"), await people.create("bob")
    channel_id = await channel_with(alice, bob)
    for n in range(120):
        await post(bob, channel_id, f"history {n:03d}")
    tab = await open_tab(browsers, size, "alice")
    page = tab.page
    log = page.locator("#messages")
    jump = page.get_by_role("button", name="Jump to latest")
    await expect(rows(page)).to_have_count(50)
    await expect(row(page, "history 119")).to_be_in_viewport()
    await expect(jump).to_be_hidden()

    # Scrolling to the top fetches the page before, and what was in view stays where it was.
    expected = await text_top(page, "history 070", at_scroll_top=True)
    await log.evaluate("el => { el.scrollTop = 0; }")
    await expect(jump).to_be_visible()
    await expect(rows(page)).to_have_count(100)
    await expect(rows(page).first).to_contain_text("history 020")
    await expect(page.get_by_role("button", name="Load older messages")).to_be_visible()
    await expect(row(page, "history 070")).to_be_in_viewport()
    seen = await text_top(page, "history 070")
    assert abs(seen - expected) < 2, (seen, expected)

    # A message arriving while reading back does not move the view; the button counts it.
    await post(bob, channel_id, "news while reading")
    await expect(jump).to_have_text("Jump to latest (1 new)")
    await expect(row(page, "news while reading")).to_have_count(1)
    assert abs(await text_top(page, "history 070") - seen) < 1
    await expect(row(page, "news while reading")).not_to_be_in_viewport()
    await assert_accessible(page, "reading back")

    await jump.click()
    await expect(row(page, "news while reading")).to_be_in_viewport()
    await expect(jump).to_be_hidden()
    await expect(log).to_be_focused()
    await page.screenshot(path=artifact_path(f"screenshots/history-{size}.png"))

    # At the bottom, new messages keep the view at the bottom.
    await post(bob, channel_id, "news at the bottom")
    await expect(row(page, "news at the bottom")).to_be_in_viewport()
    await expect(jump).to_be_hidden()

    # Up again, to the very first message: the last page comes, and the button goes.
    await log.evaluate("el => { el.scrollTop = 0; }")
    await expect(rows(page)).to_have_count(122)
    await expect(rows(page).first).to_contain_text("history 000")
    await expect(page.get_by_role("button", name="Load older messages")).to_be_hidden()
    tab.assert_no_problems()
