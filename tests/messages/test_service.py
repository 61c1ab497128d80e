"""Messages: posting, history pages, idempotent retries, edits, deletes, limits and events."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from support.chat import (
    ClientFactory,
    fetch,
    make_channel,
    post,
    refuse_inserts_at_commit,
)
from support.people import People, Person
from support.recording import RecordingFanout, recorder, recording_app

from echora_server.app import create_app
from echora_server.config import Config
from echora_server.db import channels as channel_rows
from echora_server.db import messages as message_rows
from echora_server.db.pool import POOL
from echora_server.realtime.events import MESSAGE_CREATED, MESSAGE_DELETED, MESSAGE_UPDATED


async def page(person: Person, channel_id: int, query: str = "") -> tuple[list[int], bool]:
    response = await person.get(f"/api/channels/{channel_id}/messages{query}")
    assert response.status == 200, await response.text()
    body = await response.json()
    return [m["id"] for m in body["messages"]], body["has_more"]


async def test_members_see_each_others_messages_in_order(
    client: TestClient, people: People, events: RecordingFanout
) -> None:
    olive = await people.create("olive")
    mia = await people.create("mia")
    general = await make_channel(olive, "general")
    await mia.post(f"/api/channels/{general['id']}/join")
    sent = [
        await post(olive, general["id"], "hi mia"),
        await post(mia, general["id"], "  hi olive\n\n    indented code"),
        await post(olive, general["id"], "how are you?"),
    ]
    for reader in (olive, mia):
        body = await (await reader.get(f"/api/channels/{general['id']}/messages")).json()
        assert body["has_more"] is False
        assert [(m["author"]["username"], m["content"]) for m in reversed(body["messages"])] == [
            ("olive", "hi mia"),
            ("mia", "  hi olive\n\n    indented code"),
            ("olive", "how are you?"),
        ]
    created = events.of_type(MESSAGE_CREATED)
    assert [e.data for e in created] == [{"channel_id": general["id"], "message": m} for m in sent]
    assert all(e.channel_id == general["id"] and e.user_id is None for e in created)


async def test_message_json_shape(client: TestClient, people: People) -> None:
    olive = await people.create("olive")
    general = await make_channel(olive, "general")
    message = await post(olive, general["id"], "hello", client_id="c-1")
    assert set(message) == {
        "id",
        "channel_id",
        "workspace_id",
        "author",
        "content",
        "client_id",
        "created_at",
        "edited_at",
        "attachments",
        "links",
        "reactions",
    }
    assert message["author"] == {"id": olive.user_id, "username": "olive", "display_name": ""}
    assert (message["channel_id"], message["workspace_id"]) == (general["id"], olive.workspace_id)
    assert (message["client_id"], message["edited_at"], message["attachments"]) == ("c-1", None, [])
    assert message["links"] == [] and message["reactions"] == []


async def test_history_pages_exactly(client: TestClient, people: People) -> None:
    olive = await people.create("olive")
    channel = await make_channel(olive, "general")
    other = await make_channel(olive, "other")
    ids = []
    for n in range(7):
        ids.append((await post(olive, channel["id"], f"m{n}"))["id"])
        await post(olive, other["id"], f"noise {n}")  # interleaved ids in another channel
    cid = channel["id"]
    assert await page(olive, cid) == (ids[::-1], False)
    assert await page(olive, cid, "?limit=7") == (ids[::-1], False)
    assert await page(olive, cid, "?limit=3") == ([ids[6], ids[5], ids[4]], True)
    assert await page(olive, cid, f"?before={ids[4]}&limit=3") == ([ids[3], ids[2], ids[1]], True)
    assert await page(olive, cid, f"?before={ids[3]}&limit=3") == ([ids[2], ids[1], ids[0]], False)
    assert await page(olive, cid, f"?before={ids[0]}") == ([], False)
    assert await page(olive, cid, "?after=0&limit=3") == (ids[:3], True)
    assert await page(olive, cid, f"?after={ids[2]}&limit=4") == (ids[3:], False)
    assert await page(olive, cid, f"?after={ids[2]}&limit=3") == (ids[3:6], True)
    assert await page(olive, cid, f"?after={ids[6]}") == ([], False)


@pytest.mark.parametrize(
    "query",
    [
        "?limit=0",
        "?limit=201",
        "?limit=ten",
        "?limit=",
        "?before=-1",
        "?after=1.5",
        "?before=99999999999999999999",
        "?before=5&after=1",
    ],
)
async def test_invalid_history_query_is_422(client: TestClient, people: People, query: str) -> None:
    olive = await people.create("olive")
    channel = await make_channel(olive, "general")
    response = await olive.get(f"/api/channels/{channel['id']}/messages{query}")
    assert response.status == 422
    assert (await response.json())["error"]["code"] == "invalid_request"


async def test_limit_is_capped_at_200(client: TestClient, people: People) -> None:
    olive = await people.create("olive")
    channel = await make_channel(olive, "general")
    async with client.app[POOL].acquire() as conn:
        await conn.execute(
            "INSERT INTO messages (channel_id, workspace_id, author_id, content)"
            " SELECT $1, $2, $3, 'm' || n FROM generate_series(1, 201) n",
            channel["id"],
            olive.workspace_id,
            olive.user_id,
        )
    ids, more = await page(olive, channel["id"], "?limit=200")
    assert (len(ids), more) == (200, True)
    ids, more = await page(olive, channel["id"])
    assert (len(ids), more) == (50, True)


async def test_retried_client_id_returns_the_same_message(
    client: TestClient, people: People, events: RecordingFanout
) -> None:
    olive = await people.create("olive")
    mia = await people.create("mia")
    general = await make_channel(olive, "general")
    other = await make_channel(olive, "other")
    await mia.post(f"/api/channels/{general['id']}/join")
    path = f"/api/channels/{general['id']}/messages"
    first = await olive.post(path, json={"content": "once", "client_id": "abc"})
    assert first.status == 201
    retry = await olive.post(
        path, json={"content": "once, edited in the outbox", "client_id": "abc"}
    )
    assert retry.status == 200
    assert await retry.json() == await first.json()
    assert await fetch(client, "SELECT count(*) FROM messages") == 1
    assert len(events.of_type(MESSAGE_CREATED)) == 1  # the retry published nothing

    # The id is scoped to its author and channel.
    await post(mia, general["id"], "mine", client_id="abc")
    await post(olive, other["id"], "elsewhere", client_id="abc")
    assert await fetch(client, "SELECT count(*) FROM messages") == 3
    assert len(events.of_type(MESSAGE_CREATED)) == 3


async def test_concurrent_posts_with_one_client_id_create_one_row(
    client: TestClient, people: People, events: RecordingFanout
) -> None:
    olive = await people.create("olive")
    general = await make_channel(olive, "general")
    path = f"/api/channels/{general['id']}/messages"

    async def send() -> tuple[int, dict[str, Any]]:
        response = await olive.post(path, json={"content": "race", "client_id": "same"})
        return response.status, await response.json()

    results = await asyncio.gather(*(send() for _ in range(10)))
    assert sorted(status for status, _ in results) == [200] * 9 + [201]
    assert len({body["id"] for _, body in results}) == 1
    assert await fetch(client, "SELECT count(*) FROM messages") == 1
    assert len(events.of_type(MESSAGE_CREATED)) == 1


async def test_public_channel_is_readable_but_posting_needs_joining(
    client: TestClient, people: People
) -> None:
    olive = await people.create("olive")
    mia = await people.create("mia")
    general = await make_channel(olive, "general")
    await post(olive, general["id"], "welcome")
    assert (await page(mia, general["id"]))[0] != []
    refused = await mia.post(f"/api/channels/{general['id']}/messages", json={"content": "hey"})
    assert refused.status == 403
    assert (await refused.json())["error"]["code"] == "not_channel_member"


@pytest.mark.parametrize(
    "body",
    [
        {"content": ""},
        {"content": " \n\t "},
        {"content": "x" * 4001},
        {"content": "nul\u0000byte"},
        {"content": "bell\u0007"},
        {"content": "hi", "client_id": ""},
        {"content": "hi", "client_id": "x" * 65},
        {"content": "hi", "client_id": "has space"},
        {"content": "hi", "client_id": "caf\u00e9"},
        {"content": 5},
        {"client_id": "abc"},
    ],
)
async def test_invalid_message_is_refused(
    client: TestClient, people: People, body: dict[str, Any]
) -> None:
    olive = await people.create("olive")
    general = await make_channel(olive, "general")
    response = await olive.post(f"/api/channels/{general['id']}/messages", json=body)
    assert response.status == 422, await response.text()
    assert (await response.json())["error"]["code"] == "invalid_request"
    assert await fetch(client, "SELECT count(*) FROM messages") == 0


async def test_unpaired_surrogate_is_refused_not_a_500(client: TestClient, people: People) -> None:
    olive = await people.create("olive")
    general = await make_channel(olive, "general")
    response = await olive.post(
        f"/api/channels/{general['id']}/messages",
        data=b'{"content": "half \\ud800 a pair"}',
        headers={"Content-Type": "application/json"},
    )
    assert response.status == 422


async def test_longest_message_and_right_to_left_text_are_kept(
    client: TestClient, people: People
) -> None:
    olive = await people.create("olive")
    general = await make_channel(olive, "general")
    longest = "é" * 4000
    assert (await post(olive, general["id"], longest))["content"] == longest
    rtl = "\u2067\u05e9\u05dc\u05d5\u05dd\u2069 world"
    assert (await post(olive, general["id"], rtl))["content"] == rtl


async def test_only_the_author_edits(
    client: TestClient, people: People, events: RecordingFanout
) -> None:
    olive = await people.create("olive")  # the workspace owner
    mia = await people.create("mia")
    general = await make_channel(olive, "general")
    await mia.post(f"/api/channels/{general['id']}/join")
    message = await post(mia, general["id"], "tpyo")
    path = f"/api/messages/{message['id']}"
    for other in (olive, (await people.create("max"))):
        refused = await other.request("PATCH", path, json={"content": "not yours"})
        assert refused.status == 403
    edited = await mia.request("PATCH", path, json={"content": "typo"})
    assert edited.status == 200
    body = await edited.json()
    assert (body["id"], body["content"], body["created_at"]) == (
        message["id"],
        "typo",
        message["created_at"],
    )
    assert body["edited_at"] is not None
    assert [e.data for e in events.of_type(MESSAGE_UPDATED)] == [
        {"channel_id": general["id"], "message": body}
    ]
    empty = await mia.request("PATCH", path, json={"content": "  "})
    assert empty.status == 422
    assert await fetch(client, "SELECT content FROM messages") == "typo"


async def test_author_or_manager_deletes(
    client: TestClient, people: People, events: RecordingFanout
) -> None:
    olive = await people.create("olive")  # owner
    mia = await people.create("mia")
    max_ = await people.create("max")
    general = await make_channel(olive, "general")
    for person in (mia, max_):
        await person.post(f"/api/channels/{general['id']}/join")
    first = await post(mia, general["id"], "one")
    second = await post(mia, general["id"], "two")

    assert (await max_.delete(f"/api/messages/{first['id']}")).status == 403
    assert (await mia.delete(f"/api/messages/{first['id']}")).status == 204
    assert (await olive.delete(f"/api/messages/{second['id']}")).status == 204
    again = await mia.delete(f"/api/messages/{first['id']}")
    assert again.status == 404
    assert await fetch(client, "SELECT count(*) FROM messages") == 0
    assert [(e.channel_id, e.data) for e in events.of_type(MESSAGE_DELETED)] == [
        (general["id"], {"channel_id": general["id"], "message_id": first["id"]}),
        (general["id"], {"channel_id": general["id"], "message_id": second["id"]}),
    ]
    assert (
        await mia.request("PATCH", f"/api/messages/{first['id']}", json={"content": "x"})
    ).status == 404


async def test_posting_is_rate_limited_per_user(
    config: Config, aiohttp_client: ClientFactory
) -> None:
    limited = config.model_copy(update={"message_rate_per_minute": 1, "message_rate_burst": 2})
    client = await aiohttp_client(recording_app(create_app(limited)))
    people = People(client)
    olive = await people.create("olive")
    mia = await people.create("mia")
    general = await make_channel(olive, "general")
    await mia.post(f"/api/channels/{general['id']}/join")
    await post(olive, general["id"], "one")
    await post(olive, general["id"], "two")
    response = await olive.post(f"/api/channels/{general['id']}/messages", json={"content": "3"})
    assert response.status == 429
    body = await response.json()
    assert body["error"]["code"] == "rate_limited"
    wait = body["error"]["details"]["retry_after_seconds"]
    assert isinstance(wait, int) and 1 <= wait <= 60
    assert response.headers["Retry-After"] == str(wait)
    assert await fetch(client, "SELECT count(*) FROM messages") == 2
    await post(mia, general["id"], "others still may")
    assert len(recorder(client).of_type(MESSAGE_CREATED)) == 3


async def test_rolled_back_post_publishes_nothing(
    client: TestClient, people: People, events: RecordingFanout
) -> None:
    olive = await people.create("olive")
    general = await make_channel(olive, "general")
    # The write fails at COMMIT: only code that publishes with the commit (not after the
    # INSERT) keeps this event unsent.
    await refuse_inserts_at_commit(client, "messages")
    events.events.clear()
    response = await olive.post(
        f"/api/channels/{general['id']}/messages", json={"content": "doomed", "client_id": "x"}
    )
    assert response.status == 500
    assert await fetch(client, "SELECT count(*) FROM messages") == 0
    assert events.events == []


async def test_a_message_whose_event_cannot_be_stored_is_not_stored_either(
    client: TestClient, people: People, events: RecordingFanout
) -> None:
    """With the PostgreSQL fan-out the event row and its NOTIFY are part of the message's
    transaction: when the event fails at COMMIT, the message rolls back with it (and the
    other way round, no crash between the two can leave a message without its event)."""
    olive = await people.create("olive")
    general = await make_channel(olive, "general")
    await refuse_inserts_at_commit(client, "events")
    events.events.clear()
    response = await olive.post(
        f"/api/channels/{general['id']}/messages", json={"content": "unannounced"}
    )
    assert response.status == 500
    assert await fetch(client, "SELECT count(*) FROM messages") == 0
    assert events.events == []


async def test_queries_the_websocket_uses(client: TestClient, people: People) -> None:
    olive = await people.create("olive")
    mia = await people.create("mia")
    eve = await people.create("eve", workspace="elsewhere")
    await eve.post(f"/api/workspaces/{eve.workspace_id}/members", json={"username": "mia"})
    general = await make_channel(olive, "general")
    left = await make_channel(olive, "left")
    away = await make_channel(eve, "away")
    for channel in (general, left, away):
        await mia.post(f"/api/channels/{channel['id']}/join")
    m1 = await post(olive, general["id"], "1")
    await post(olive, left["id"], "not for mia any more")
    m3 = await post(eve, away["id"], "3")
    m4 = await post(olive, general["id"], "4")
    await mia.post(f"/api/channels/{left['id']}/leave")

    async with client.app[POOL].acquire() as conn:
        everything = await message_rows.select_messages_after_for_user(conn, mia.user_id, 0, 10)
        assert [m.id for m in everything] == [m1["id"], m3["id"], m4["id"]]
        later = await message_rows.select_messages_after_for_user(conn, mia.user_id, m1["id"], 1)
        assert [m.id for m in later] == [m3["id"]]
        one_ws = await message_rows.select_messages_after_for_user(
            conn, mia.user_id, 0, 10, workspace_id=olive.workspace_id
        )
        assert [m.id for m in one_ws] == [m1["id"], m4["id"]]
        assert one_ws[0].author.username == "olive"

        assert await channel_rows.select_channel_ids_for_user(conn, mia.user_id) == [
            (general["id"], olive.workspace_id),
            (away["id"], eve.workspace_id),
        ]
        assert await channel_rows.select_channel_ids_for_user(
            conn, mia.user_id, eve.workspace_id
        ) == [(away["id"], eve.workspace_id)]
        members = await conn.fetch(
            "SELECT user_id FROM channel_members WHERE channel_id = $1 ORDER BY 1", general["id"]
        )
        assert [r["user_id"] for r in members] == sorted([olive.user_id, mia.user_id])
