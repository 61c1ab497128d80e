"""Staging: every event a push- or poll-mode bot's socket would get is written to its inbox in
the transaction of the write (a rolled-back write leaves no entry, and an entry that cannot be
written rolls the write back), with ids increasing per bot and a hard TTL from creation."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from support.bots import make_bot
from support.chat import fetch, make_channel, post, refuse_inserts_at_commit
from support.people import People, Person
from support.recording import RecordingFanout

from echora_server.agents.sweeper import InboxSweepResult, sweep_once
from echora_server.db.pool import POOL
from echora_server.realtime.events import INBOX_STAGED

TTL = 7200.0


@pytest.fixture
def config_overrides() -> dict[str, Any]:
    return {"inbox_ttl": TTL}


async def entries(client: TestClient, bot: Person) -> list[dict[str, Any]]:
    async with client.app[POOL].acquire() as conn:
        rows = await conn.fetch(
            "SELECT * FROM inbox_entries WHERE bot_id = $1 ORDER BY id", bot.user_id
        )
    return [{**dict(row), "body": json.loads(row["body"])} for row in rows]


async def types(client: TestClient, bot: Person) -> list[str]:
    return [entry["type"] for entry in await entries(client, bot)]


async def add(owner: Person, channel_id: int, member: Person) -> None:
    response = await owner.post(
        f"/api/channels/{channel_id}/members", json={"user_id": member.user_id}
    )
    assert response.status == 201, await response.text()


async def test_push_and_poll_bots_get_what_their_socket_would(
    client: TestClient, people: People, events: RecordingFanout
) -> None:
    owner = await people.create("olive")
    uma = await people.create("uma")
    poller = await make_bot(owner, "poller", "poll")
    pusher = await make_bot(owner, "pusher", "push", callback_url="https://agent.example/in")
    listener = await make_bot(owner, "listener", "websocket")
    elsewhere = await people.create("sam", workspace="other")
    stranger = await make_bot(elsewhere, "stranger", "poll")
    general = (await make_channel(owner, "general"))["id"]
    for member in (poller, pusher, listener):
        await add(owner, general, member)
    assert (await uma.post(f"/api/channels/{general}/join")).status == 200

    form = aiohttp.FormData()
    form.add_field("channel_id", str(general))
    form.add_field("file", io.BytesIO(b"quarterly numbers"), filename="q3.txt")
    (upload,) = (await (await uma.post("/api/upload", data=form)).json())["attachments"]
    message = await post(uma, general, "the report", attachment_ids=[upload["id"]])
    edited = await uma.request("PATCH", f"/api/messages/{message['id']}", json={"content": "v2"})
    assert edited.status == 200
    one_shot = aiohttp.FormData(default_to_multipart=True)
    one_shot.add_field("content", "one shot")
    one_shot.add_field("file", io.BytesIO(b"more"), filename="more.txt")
    assert (await uma.post(f"/api/channels/{general}/messages", data=one_shot)).status == 201
    assert (await owner.delete(f"/api/messages/{message['id']}")).status == 204
    removed = await owner.delete(f"/api/channels/{general}/members/{poller.user_id}")
    assert removed.status == 204
    await post(uma, general, "after the poller left")

    assert await types(client, poller) == [
        "channel.member_added",  # itself
        "channel.member_added",  # pusher
        "channel.member_added",  # listener
        "channel.member_added",  # uma
        "message.created",
        "message.updated",
        "message.created",  # the one-shot send
        "message.deleted",
        "channel.member_removed",  # itself: told, as its socket would be, then nothing more
    ]
    assert await types(client, pusher) == [
        *["channel.member_added"] * 3,
        *["message.created", "message.updated", "message.created", "message.deleted"],
        "channel.member_removed",
        "message.created",
    ]
    assert await entries(client, listener) == []  # websocket mode: its socket, no inbox
    assert await entries(client, stranger) == []

    staged = await entries(client, poller)
    assert [entry["id"] for entry in staged] == list(range(1, len(staged) + 1))
    published = [e for e in events.events if e.type != INBOX_STAGED and e.channel_id == general]
    for entry in staged:  # the body is the event as clients get it
        assert any(e.type == entry["type"] and e.data == entry["body"] for e in published)
    created = staged[4]
    (attachment,) = created["body"]["message"]["attachments"]
    assert (attachment["id"], attachment["filename"]) == (upload["id"], "q3.txt")
    assert attachment["sha256"] == upload["sha256"] and attachment["url"] == upload["url"]
    assert created["attachment_ids"] == [upload["id"]]
    for entry in staged:
        assert entry["expires_at"] - entry["created_at"] == dt.timedelta(seconds=TTL)
        assert (entry["fetched_at"], entry["acked_at"], entry["attempts"]) == (None, None, 0)
    # Every process is told which bots have news.
    woken = [e.data["bot_ids"] for e in events.of_type(INBOX_STAGED)]
    assert [poller.user_id, pusher.user_id] in woken
    assert all(stranger.user_id not in ids and listener.user_id not in ids for ids in woken)


async def test_a_bot_removed_from_the_workspace_is_told_and_then_gets_nothing(
    client: TestClient, people: People
) -> None:
    owner = await people.create("olive")
    poller = await make_bot(owner, "poller", "poll")
    general = (await make_channel(owner, "general"))["id"]
    random = (await make_channel(owner, "random"))["id"]
    await add(owner, general, poller)
    await add(owner, random, poller)
    path = f"/api/workspaces/{owner.workspace_id}/members/{poller.user_id}"
    assert (await owner.delete(path)).status == 204
    await post(owner, general, "nobody bot here")
    got = await entries(client, poller)
    assert [e["type"] for e in got] == [
        "channel.member_added",
        "channel.member_added",
        "channel.member_removed",
        "channel.member_removed",
        "workspace.member_removed",
    ]
    assert {e["body"]["channel_id"] for e in got[2:4]} == {general, random}


async def test_a_rolled_back_write_stages_nothing(
    client: TestClient, people: People, events: RecordingFanout
) -> None:
    owner = await people.create("olive")
    poller = await make_bot(owner, "poller", "poll")
    general = (await make_channel(owner, "general"))["id"]
    await add(owner, general, poller)
    before = await entries(client, poller)
    await refuse_inserts_at_commit(client, "messages")
    events.events.clear()
    response = await owner.post(f"/api/channels/{general}/messages", json={"content": "doomed"})
    assert response.status == 500
    assert await entries(client, poller) == before
    assert await fetch(client, "SELECT last_entry_id FROM bots") == len(before)
    assert events.events == []


async def test_an_entry_that_cannot_be_written_rolls_the_write_back(
    client: TestClient, people: People, events: RecordingFanout
) -> None:
    owner = await people.create("olive")
    poller = await make_bot(owner, "poller", "poll")
    general = (await make_channel(owner, "general"))["id"]
    await add(owner, general, poller)
    await refuse_inserts_at_commit(client, "inbox_entries")
    events.events.clear()
    response = await owner.post(f"/api/channels/{general}/messages", json={"content": "unowed"})
    assert response.status == 500
    assert await fetch(client, "SELECT count(*) FROM messages") == 0
    assert events.events == []


async def test_ids_increase_per_bot_without_gaps_under_concurrent_writes(
    client: TestClient, people: People
) -> None:
    owner = await people.create("olive")
    uma = await people.create("uma")
    bots = [await make_bot(owner, f"bot{i}", "poll") for i in range(3)]
    channels = [(await make_channel(owner, name))["id"] for name in ("one", "two")]
    for channel_id in channels:
        assert (await uma.post(f"/api/channels/{channel_id}/join")).status == 200
        for bot in bots:
            await add(owner, channel_id, bot)
    staged_before = {bot.user_id: len(await entries(client, bot)) for bot in bots}
    writes = [
        post(person, channel_id, f"{person.username} {n}")
        for n in range(8)
        for person in (owner, uma)
        for channel_id in channels
    ]
    posted = await asyncio.gather(*writes)
    for bot in bots:
        got = await entries(client, bot)
        assert [e["id"] for e in got] == list(range(1, len(got) + 1))
        assert len(got) - staged_before[bot.user_id] == len(writes)
        carried = sorted(e["body"]["message"]["id"] for e in got if e["type"] == "message.created")
        assert carried == sorted(message["id"] for message in posted)


async def test_the_sweep_deletes_expired_entries_whatever_their_state(
    client: TestClient, people: People
) -> None:
    owner = await people.create("olive")
    poller = await make_bot(owner, "poller", "poll")
    general = (await make_channel(owner, "general"))["id"]
    await add(owner, general, poller)
    for n in range(3):
        await post(owner, general, f"m{n}")
    async with client.app[POOL].acquire() as conn:
        # One acknowledged, one fetched and leased, the rest untouched: all expire alike.
        await conn.execute("UPDATE inbox_entries SET acked_at = now() WHERE id = 2")
        await conn.execute(
            "UPDATE inbox_entries SET fetched_at = now(), leased_until = now() + interval '1h'"
            " WHERE id = 3"
        )
        first, last, acked = await conn.fetchrow(
            "SELECT min(expires_at), max(expires_at), max(acked_at) FROM inbox_entries"
        )
    pool = client.app[POOL]
    retention = 3600.0
    # Within the acknowledged entry's retention, before any expiry: nothing goes.
    assert await sweep_once(pool, acked + dt.timedelta(seconds=retention - 1)) == (
        InboxSweepResult()
    )
    assert len(await entries(client, poller)) == 4
    # Past it, only the acknowledged one.
    assert await sweep_once(pool, acked + dt.timedelta(seconds=retention + 1)) == (
        InboxSweepResult(acknowledged=1)
    )
    assert sorted(e["id"] for e in await entries(client, poller)) == [1, 3, 4]
    assert (await sweep_once(pool, first)).expired == 1
    assert await sweep_once(pool, last) == InboxSweepResult(expired_unfetched=1, expired_fetched=1)
    assert await entries(client, poller) == []
    assert (await sweep_once(pool, last)).expired == 0
    with pytest.raises(ValueError, match="timezone"):
        await sweep_once(pool, dt.datetime(2030, 1, 1))
