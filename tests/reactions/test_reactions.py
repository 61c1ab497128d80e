"""Reactions: add and remove, counts and "mine" per viewer in every message JSON, one query
per page, events on a real WebSocket and in a poll-mode bot's inbox, the refusals."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestClient
from support.bots import make_bot, poll
from support.chat import assert_same_response, fetch, make_channel, post, tapped_client
from support.people import People, Person
from support.recording import RecordingFanout, recorder, recording_app

from echora_server.app import create_app
from echora_server.config import Config
from echora_server.db.pool import POOL
from echora_server.realtime.events import MESSAGE_UPDATED, REACTION_ADDED, REACTION_REMOVED

ClientFactory = Callable[..., Awaitable[TestClient]]
TIMEOUT = 10
THUMBS, HEART, FAMILY = "👍", "❤️", "👨‍👩‍👧"


def path(message_id: int, emoji: str) -> str:
    return f"/api/messages/{message_id}/reactions/{quote(emoji, safe='')}"


async def react(person: Person, message_id: int, emoji: str) -> tuple[int, dict[str, Any]]:
    response = await person.request("PUT", path(message_id, emoji))
    assert response.status in (200, 201), await response.text()
    return response.status, await response.json()


async def unreact(person: Person, message_id: int, emoji: str) -> None:
    response = await person.delete(path(message_id, emoji))
    assert response.status == 204, await response.text()


async def history(person: Person, channel_id: int, **query: Any) -> list[dict[str, Any]]:
    params = {k: str(v) for k, v in query.items()}
    response = await person.get(f"/api/channels/{channel_id}/messages", params=params)
    assert response.status == 200, await response.text()
    return list((await response.json())["messages"])


def reactions_of(messages: list[dict[str, Any]], message_id: int) -> list[dict[str, Any]]:
    (message,) = [m for m in messages if m["id"] == message_id]
    return list(message["reactions"])


async def test_add_is_idempotent_and_remove_too(people: People, events: RecordingFanout) -> None:
    alice, bob = await people.create("alice"), await people.create("bob")
    channel = (await make_channel(alice, "general"))["id"]
    await bob.post(f"/api/channels/{channel}/join")
    message = (await post(alice, channel, "hello"))["id"]

    assert await react(bob, message, THUMBS) == (
        201,
        {"message_id": message, "emoji": THUMBS, "count": 1, "mine": True},
    )
    assert await react(bob, message, THUMBS) == (
        200,
        {"message_id": message, "emoji": THUMBS, "count": 1, "mine": True},
    )
    assert (await react(alice, message, THUMBS))[1]["count"] == 2
    assert await react(alice, message, FAMILY) == (
        201,
        {"message_id": message, "emoji": FAMILY, "count": 1, "mine": True},
    )
    await unreact(bob, message, THUMBS)
    await unreact(bob, message, THUMBS)  # not there any more: 204 all the same
    await unreact(bob, message, HEART)  # never there

    def data(user: Person, emoji: str, count: int) -> dict[str, Any]:
        return {
            "channel_id": channel,
            "message_id": message,
            "emoji": emoji,
            "user_id": user.user_id,
            "count": count,
        }

    # Only changes publish: the repeated add and the two empty removals sent nothing.
    assert [(e.type, e.data) for e in events.events if e.type.startswith("reaction.")] == [
        (REACTION_ADDED, data(bob, THUMBS, 1)),
        (REACTION_ADDED, data(alice, THUMBS, 2)),
        (REACTION_ADDED, data(alice, FAMILY, 1)),
        (REACTION_REMOVED, data(bob, THUMBS, 1)),
    ]
    reaction_events = [e for e in events.events if e.type.startswith("reaction.")]
    assert all(
        e.channel_id == channel and e.workspace_id == alice.workspace_id for e in reaction_events
    )
    rows = await fetch(
        alice.client,
        "SELECT array_agg(user_id::text || ' ' || emoji ORDER BY id) FROM reactions",
    )
    assert rows == [f"{alice.user_id} {THUMBS}", f"{alice.user_id} {FAMILY}"]


async def test_history_counts_and_mine_per_viewer(people: People, events: RecordingFanout) -> None:
    alice, bob = await people.create("alice"), await people.create("bob")
    channel = (await make_channel(alice, "general"))["id"]
    await bob.post(f"/api/channels/{channel}/join")
    first = await post(alice, channel, "first", client_id="c-1")
    second = (await post(bob, channel, "second"))["id"]
    await react(bob, first["id"], HEART)  # first use: heart, then thumbs
    await react(alice, first["id"], THUMBS)
    await react(bob, first["id"], THUMBS)
    await react(alice, second, FAMILY)

    as_alice, as_bob = await history(alice, channel), await history(bob, channel)
    assert reactions_of(as_alice, first["id"]) == [
        {"emoji": HEART, "count": 1, "mine": False},
        {"emoji": THUMBS, "count": 2, "mine": True},
    ]
    assert reactions_of(as_bob, first["id"]) == [
        {"emoji": HEART, "count": 1, "mine": True},
        {"emoji": THUMBS, "count": 2, "mine": True},
    ]
    assert reactions_of(as_alice, second) == [{"emoji": FAMILY, "count": 1, "mine": True}]
    assert reactions_of(as_bob, second) == [{"emoji": FAMILY, "count": 1, "mine": False}]
    # Paging forward reads them too.
    assert reactions_of(await history(bob, channel, after=0), second) == [
        {"emoji": FAMILY, "count": 1, "mine": False}
    ]

    # The POST answer: a retry returns the message as it is now.
    retry = await alice.post(
        f"/api/channels/{channel}/messages", json={"content": "first", "client_id": "c-1"}
    )
    assert retry.status == 200
    assert (await retry.json())["reactions"] == reactions_of(as_alice, first["id"])
    new = await post(alice, channel, "third")
    assert new["reactions"] == []

    # An edit answers with the editor's view; its event carries counts, "mine" for nobody.
    edited = await alice.request("PATCH", f"/api/messages/{first['id']}", json={"content": "1st"})
    assert edited.status == 200
    assert (await edited.json())["reactions"] == reactions_of(as_alice, first["id"])
    (update,) = events.of_type(MESSAGE_UPDATED)
    assert update.data["message"]["reactions"] == [
        {"emoji": HEART, "count": 1, "mine": False},
        {"emoji": THUMBS, "count": 2, "mine": False},
    ]

    # Removing the last one of an emoji takes it off the list.
    await unreact(bob, first["id"], HEART)
    assert reactions_of(await history(bob, channel), first["id"]) == [
        {"emoji": THUMBS, "count": 2, "mine": True}
    ]


async def test_history_reads_reactions_in_one_query_per_page(
    database_url: str, tmp_path: Path, aiohttp_client: ClientFactory
) -> None:
    async with tapped_client(database_url, tmp_path, aiohttp_client) as (client, pg):
        people = People(client)
        alice = await people.create("alice")
        small = (await make_channel(alice, "small"))["id"]
        large = (await make_channel(alice, "large"))["id"]
        async with client.app[POOL].acquire() as conn:
            for channel, count in ((small, 2), (large, 40)):
                ids = await conn.fetch(
                    "INSERT INTO messages (channel_id, workspace_id, author_id, content)"
                    " SELECT $1, $2, $3, 'm' || n FROM generate_series(1, $4::int) n"
                    " RETURNING id",
                    channel,
                    alice.workspace_id,
                    alice.user_id,
                    count,
                )
                for emoji in (THUMBS, HEART, FAMILY):
                    await conn.execute(
                        "INSERT INTO reactions (message_id, user_id, emoji)"
                        " SELECT unnest($1::bigint[]), $2, $3",
                        [r["id"] for r in ids],
                        alice.user_id,
                        emoji,
                    )

        async def round_trips(channel: int) -> tuple[int, list[dict[str, Any]]]:
            return await pg.fewest_round_trips(lambda: history(alice, channel, limit=50))

        few, small_page = await round_trips(small)
        many, large_page = await round_trips(large)
        assert len(small_page) == 2 and len(large_page) == 40
        expected = [
            {"emoji": THUMBS, "count": 1, "mine": True},
            {"emoji": HEART, "count": 1, "mine": True},
            {"emoji": FAMILY, "count": 1, "mine": True},
        ]
        assert all(m["reactions"] == expected for m in small_page + large_page)
        # The channel check, the page, its attachments, its reactions: whatever the size.
        assert few == many == 4


async def test_a_second_user_gets_the_events_on_a_websocket(people: People) -> None:
    alice, bob = await people.create("alice"), await people.create("bob")
    channel = (await make_channel(alice, "general"))["id"]
    await bob.post(f"/api/channels/{channel}/join")
    ws = await bob.client.ws_connect("/api/ws", headers=bob.auth)
    try:
        assert (await ws.receive_json(timeout=TIMEOUT))["type"] == "hello"
        # The fan-out keeps order but is asynchronous: once this message's event is here,
        # every earlier one (bob's joining) is behind us.
        message = (await post(alice, channel, "react to me"))["id"]
        while (await ws.receive_json(timeout=TIMEOUT)).get("message", {}).get("id") != message:
            pass
        await react(alice, message, THUMBS)
        await unreact(alice, message, THUMBS)
        frames = [await ws.receive_json(timeout=TIMEOUT) for _ in range(2)]
    finally:
        await ws.close()
    body = {"channel_id": channel, "message_id": message, "emoji": THUMBS}
    assert frames == [
        {"type": REACTION_ADDED, **body, "user_id": alice.user_id, "count": 1},
        {"type": REACTION_REMOVED, **body, "user_id": alice.user_id, "count": 0},
    ]


async def test_only_readers_of_the_channel_may_react(
    people: People, events: RecordingFanout
) -> None:
    alice, carol = await people.create("alice"), await people.create("carol")
    dave = await people.create("dave", workspace="other")
    private = (await make_channel(alice, "secret", private=True))["id"]
    public = (await make_channel(alice, "general"))["id"]
    hidden = (await post(alice, private, "members only"))["id"]
    open_one = (await post(alice, public, "anyone here"))["id"]
    deleted = (await post(alice, public, "soon gone"))["id"]
    assert (await alice.delete(f"/api/messages/{deleted}")).status == 204
    for method in ("PUT", "DELETE"):
        # Not in the private channel, another workspace, missing: one and the same 404.
        for outsider, theirs in ((carol, hidden), (dave, hidden), (dave, open_one)):
            await assert_same_response(
                outsider, method, path(theirs, THUMBS), path(deleted, THUMBS)
            )
        await assert_same_response(carol, method, path(hidden, THUMBS), path(2**62, THUMBS))
    assert await fetch(alice.client, "SELECT count(*) FROM reactions") == 0
    assert not [e for e in events.events if e.type.startswith("reaction.")]
    # A workspace member who has not joined a public channel may read it, so may react.
    assert (await react(carol, open_one, THUMBS))[0] == 201


@pytest.mark.parametrize(
    "emoji",
    [
        "a",
        "ok",
        " ",
        "👍 ",
        " 👍",
        "👍a",
        "👍\n",
        "\u200d",  # a joiner alone
        "\ufe0f👍",  # a selector first
        "1\ufe0f\u20e3",  # keycaps start with a digit
        "\x00",
        "\u202e👍",
        "👍" * 33,
        "%",
    ],
)
async def test_what_is_not_an_emoji_is_refused(
    people: People, events: RecordingFanout, emoji: str
) -> None:
    alice = await people.create("alice")
    channel = (await make_channel(alice, "general"))["id"]
    message = (await post(alice, channel, "hello"))["id"]
    for method in ("PUT", "DELETE"):
        response = await alice.request(method, path(message, emoji))
        assert response.status == 422, (method, emoji, await response.text())
        error = (await response.json())["error"]
        assert error["code"] == "invalid_request"
        assert [d["field"] for d in error["details"]] == ["emoji"]
    assert await fetch(alice.client, "SELECT count(*) FROM reactions") == 0
    assert not [e for e in events.events if e.type.startswith("reaction.")]


async def test_deleting_the_message_deletes_its_reactions(people: People) -> None:
    alice, bob = await people.create("alice"), await people.create("bob")
    channel = (await make_channel(alice, "general"))["id"]
    await bob.post(f"/api/channels/{channel}/join")
    doomed = (await post(alice, channel, "doomed"))["id"]
    kept = (await post(alice, channel, "kept"))["id"]
    for person in (alice, bob):
        for message in (doomed, kept):
            await react(person, message, THUMBS)
    await react(bob, doomed, HEART)
    assert (await alice.delete(f"/api/messages/{doomed}")).status == 204
    left = await fetch(alice.client, "SELECT array_agg(DISTINCT message_id) FROM reactions")
    assert left == [kept]
    assert await fetch(alice.client, "SELECT count(*) FROM reactions") == 2
    response = await bob.request("PUT", path(doomed, THUMBS))
    assert response.status == 404


async def test_a_poll_mode_bot_gets_reactions_in_its_inbox(people: People) -> None:
    owner = await people.create("olive")
    bot = await make_bot(owner, "helper", "poll")
    channel = (await make_channel(owner, "general"))["id"]
    added = await owner.post(f"/api/channels/{channel}/members", json={"user_id": bot.user_id})
    assert added.status == 201
    message = await post(owner, channel, "hello bot")
    await react(owner, message["id"], THUMBS)
    await unreact(owner, message["id"], THUMBS)
    entries = await poll(bot, limit=10)
    assert [e["type"] for e in entries] == [
        "channel.member_added",
        "message.created",
        REACTION_ADDED,
        REACTION_REMOVED,
    ]
    body = {"channel_id": channel, "message_id": message["id"], "emoji": THUMBS}
    assert [e["body"] for e in entries[2:]] == [
        {**body, "user_id": owner.user_id, "count": 1},
        {**body, "user_id": owner.user_id, "count": 0},
    ]
    # And the bot may react itself, like any reader.
    assert (await react(bot, message["id"], HEART))[0] == 201


async def test_reactions_share_the_send_budget(
    config: Config, aiohttp_client: ClientFactory
) -> None:
    limited = config.model_copy(update={"message_rate_per_minute": 1, "message_rate_burst": 3})
    client = await aiohttp_client(recording_app(create_app(limited)))
    alice = await People(client).create("alice")
    channel = (await make_channel(alice, "general"))["id"]
    message = (await post(alice, channel, "one"))["id"]  # one token
    await react(alice, message, THUMBS)  # two
    await unreact(alice, message, THUMBS)  # three
    for method in ("PUT", "DELETE"):
        response = await alice.request(method, path(message, HEART))
        assert response.status == 429
        body = await response.json()
        assert body["error"]["code"] == "rate_limited"
        assert response.headers["Retry-After"] == str(
            body["error"]["details"]["retry_after_seconds"]
        )
    refused = await alice.post(f"/api/channels/{channel}/messages", json={"content": "x"})
    assert refused.status == 429
    assert await fetch(client, "SELECT count(*) FROM reactions") == 0
    assert len([e for e in recorder(client).events if e.type.startswith("reaction.")]) == 2


async def test_concurrent_reactions_count_every_one(people: People) -> None:
    alice = await people.create("alice")
    channel = (await make_channel(alice, "general"))["id"]
    message = (await post(alice, channel, "popular"))["id"]
    crowd = [await people.create(f"user{n}") for n in range(8)]
    for person in crowd:
        await person.post(f"/api/channels/{channel}/join")
    results = await asyncio.gather(*(react(person, message, THUMBS) for person in crowd))
    # The message's row makes them take turns: each saw the count the one before left.
    assert sorted(body["count"] for _, body in results) == list(range(1, 9))
    (only,) = reactions_of(await history(alice, channel), message)
    assert only == {"emoji": THUMBS, "count": 8, "mine": False}


async def test_the_emoji_arrives_as_sent(people: People) -> None:
    """Percent-encoded UTF-8 in the path, decoded once; the JSON says it back."""
    alice = await people.create("alice")
    channel = (await make_channel(alice, "general"))["id"]
    message = (await post(alice, channel, "flags"))["id"]
    england = "🏴\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f"
    for emoji in (england, "🇫🇷", "👍🏽", FAMILY, "☀️"):
        status, body = await react(alice, message, emoji)
        assert (status, body["emoji"]) == (201, emoji)
    raw = await alice.client.request(
        "PUT", f"/api/messages/{message}/reactions/%F0%9F%8E%89", headers=alice.auth
    )
    assert raw.status == 201 and (await raw.json())["emoji"] == "🎉"
    assert [r["emoji"] for r in reactions_of(await history(alice, channel), message)] == [
        england,
        "🇫🇷",
        "👍🏽",
        FAMILY,
        "☀️",
        "🎉",
    ]
