"""Direct messages: opened idempotently (any order, concurrently), 2 to 8 people of one
workspace, private by construction, with messages and files as channels have, and listed
apart from channels."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from support.bots import make_bot, poll
from support.chat import assert_same_response, fetch, make_channel, post
from support.people import People, Person

from echora_server.db.pool import POOL

TIMEOUT = 10
MISSING = 999_999


async def open_dm(person: Person, *user_ids: int, workspace_id: int | None = None) -> Any:
    workspace = person.workspace_id if workspace_id is None else workspace_id
    return await person.post(f"/api/workspaces/{workspace}/dms", json={"user_ids": list(user_ids)})


async def opened(person: Person, *user_ids: int, status: int = 201) -> dict[str, Any]:
    response = await open_dm(person, *user_ids)
    assert response.status == status, await response.text()
    return await response.json()  # type: ignore[no-any-return]


async def error_of(response: Any) -> tuple[int, str]:
    return response.status, (await response.json())["error"]["code"]


async def test_the_same_set_opens_the_same_conversation_in_any_order(
    client: TestClient, people: People
) -> None:
    alice, bob, carol = [await people.create(n) for n in ("alice", "bob", "carol")]
    pair = await opened(alice, bob.user_id)
    assert [m["username"] for m in pair["members"]] == ["alice", "bob"]
    assert pair["created_by"] == alice.user_id
    # Again, from either side, with the caller named or not, with duplicates: the same one.
    assert await opened(alice, bob.user_id, status=200) == pair
    assert await opened(bob, alice.user_id, status=200) == pair
    assert await opened(bob, alice.user_id, bob.user_id, alice.user_id, status=200) == pair

    group = await opened(carol, bob.user_id, alice.user_id)
    assert group["id"] != pair["id"]
    assert await opened(alice, carol.user_id, bob.user_id, status=200) == group
    assert await opened(bob, carol.user_id, alice.user_id, bob.user_id, status=200) == group
    rows = await fetch(client, "SELECT count(*) FROM channels WHERE kind = 'dm'")
    assert rows == 2


async def test_concurrent_first_opens_create_one(client: TestClient, people: People) -> None:
    names = ("alice", "bob", "carol", "dave")
    members = [await people.create(name) for name in names]
    ids = [m.user_id for m in members]
    # Every member asks at once, each naming the others in another order.
    responses = await asyncio.gather(
        *(
            open_dm(member, *reversed([i for i in ids if i != member.user_id]))
            for member in members
            for _ in range(2)
        )
    )
    statuses = sorted(r.status for r in responses)
    assert statuses == [200] * 7 + [201], statuses
    bodies = [await r.json() for r in responses]
    assert len({b["id"] for b in bodies}) == 1
    assert await fetch(client, "SELECT count(*) FROM channels WHERE kind = 'dm'") == 1
    assert await fetch(client, "SELECT count(*) FROM channel_members") == 4


async def test_two_to_eight_people(client: TestClient, people: People) -> None:
    alice = await people.create("alice")
    others = [await people.create(f"user{i}") for i in range(8)]
    assert await error_of(await open_dm(alice, alice.user_id)) == (422, "direct_message_size")
    nine = await open_dm(alice, *(o.user_id for o in others))
    assert await error_of(nine) == (422, "direct_message_size")
    assert (await open_dm(alice)).status == 422  # no one named at all
    # Eight others named, the caller among them: eight people.
    eight = await open_dm(alice, alice.user_id, *(o.user_id for o in others[:7]))
    assert eight.status == 201, await eight.text()
    assert len((await eight.json())["members"]) == 8
    assert await fetch(client, "SELECT count(*) FROM channels") == 1


async def test_users_outside_the_workspace_look_missing(client: TestClient, people: People) -> None:
    alice = await people.create("alice")
    bob = await people.create("bob")
    stranger = await people.create("sam", workspace="elsewhere")
    theirs = await open_dm(alice, stranger.user_id)
    missing = await open_dm(alice, MISSING)
    assert (theirs.status, await theirs.read()) == (missing.status, await missing.read())
    assert await error_of(await open_dm(alice, bob.user_id, MISSING)) == (404, "user_not_found")
    # A workspace that is not the caller's looks missing too, whoever is named.
    await assert_same_response(
        stranger,
        "POST",
        f"/api/workspaces/{alice.workspace_id}/dms",
        f"/api/workspaces/{MISSING}/dms",
        json={"user_ids": [alice.user_id]},
    )
    await assert_same_response(
        stranger,
        "GET",
        f"/api/workspaces/{alice.workspace_id}/dms",
        f"/api/workspaces/{MISSING}/dms",
    )
    assert await fetch(client, "SELECT count(*) FROM channels") == 0


async def upload_into(person: Person, channel_id: int, data: bytes) -> Any:
    form = aiohttp.FormData()
    form.add_field("channel_id", str(channel_id))
    form.add_field("file", io.BytesIO(data), filename="notes.txt", content_type="text/plain")
    return await person.post("/api/upload", data=form)


async def test_only_members_reach_it(client: TestClient, people: People) -> None:
    alice = await people.create("alice")  # the workspace's owner
    bob = await people.create("bob")
    eve = await people.create("eve")
    stranger = await people.create("sam", workspace="elsewhere")
    dm = await opened(bob, alice.user_id)
    message = await post(alice, dm["id"], "just us")
    response = await upload_into(alice, dm["id"], b"secret bytes")
    assert response.status == 201, await response.text()
    (attachment,) = (await response.json())["attachments"]
    await post(alice, dm["id"], "", attachment_ids=[attachment["id"]])
    assert (await bob.get(attachment["url"])).status == 200

    for outsider in (eve, stranger):
        for method, path, kw in [
            ("GET", f"/api/channels/{dm['id']}", {}),
            ("GET", f"/api/channels/{dm['id']}/messages", {}),
            ("POST", f"/api/channels/{dm['id']}/messages", {"json": {"content": "hi"}}),
            ("POST", f"/api/channels/{dm['id']}/join", {}),
            ("GET", f"/api/channels/{dm['id']}/members", {}),
            ("POST", f"/api/channels/{dm['id']}/members", {"json": {"user_id": eve.user_id}}),
            ("DELETE", f"/api/channels/{dm['id']}/members/{bob.user_id}", {}),
        ]:
            missing = path.replace(f"/{dm['id']}", f"/{MISSING}", 1)
            await assert_same_response(outsider, method, path, missing, **kw)
        assert (await outsider.get(attachment["url"])).status == 404
        assert (await outsider.delete(f"/api/messages/{message['id']}")).status == 404
        assert (await upload_into(outsider, dm["id"], b"x")).status == 404
        listed = await outsider.get(f"/api/workspaces/{outsider.workspace_id}/dms")
        assert (await listed.json())["dms"] == []
    # Not even the workspace's owner may add someone, remove someone, leave or rejoin.
    fixed = (403, "direct_message")
    add_eve = await alice.post(f"/api/channels/{dm['id']}/members", json={"user_id": eve.user_id})
    assert await error_of(add_eve) == fixed
    remove_bob = f"/api/channels/{dm['id']}/members/{bob.user_id}"
    assert await error_of(await alice.delete(remove_bob)) == fixed
    assert await error_of(await bob.post(f"/api/channels/{dm['id']}/leave")) == fixed
    assert await error_of(await bob.delete(remove_bob)) == fixed
    assert await error_of(await bob.post(f"/api/channels/{dm['id']}/join")) == fixed
    members = await fetch(
        client,
        "SELECT array_agg(user_id ORDER BY user_id) FROM channel_members WHERE channel_id = $1",
        dm["id"],
    )
    assert members == [alice.user_id, bob.user_id]
    # The members read it as a channel.
    history = await (await bob.get(f"/api/channels/{dm['id']}/messages")).json()
    assert [m["content"] for m in history["messages"]] == ["", "just us"]
    single = await (await bob.get(f"/api/channels/{dm['id']}")).json()
    assert (single["kind"], single["private"], single["joined"], single["name"]) == (
        "dm",
        True,
        True,
        "",
    )


async def test_the_database_keeps_outsiders_out(client: TestClient, people: People) -> None:
    alice, bob, eve = [await people.create(n) for n in ("alice", "bob", "eve")]
    dm = await opened(alice, bob.user_id)
    async with client.app[POOL].acquire() as conn:
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(
                "INSERT INTO channel_members (channel_id, workspace_id, user_id)"
                " VALUES ($1, $2, $3)",
                dm["id"],
                alice.workspace_id,
                eve.user_id,
            )
        with pytest.raises(asyncpg.CheckViolationError):  # a DM is private, always
            await conn.execute("UPDATE channels SET private = false WHERE id = $1", dm["id"])


async def test_listed_apart_from_channels(client: TestClient, people: People) -> None:
    alice, bob, carol = [await people.create(n) for n in ("alice", "bob", "carol")]
    general = await make_channel(alice, "general")
    pair = await opened(alice, bob.user_id)
    group = await opened(carol, alice.user_id, bob.user_id)
    await opened(carol, bob.user_id)  # not alice's
    for person in (alice, bob, carol):
        listed = await (await person.get(f"/api/channels?workspace_id={alice.workspace_id}")).json()
        assert [c["id"] for c in listed["channels"]] == [general["id"]]
        assert listed["channels"][0]["kind"] == "channel"
    mine = await (await alice.get(f"/api/workspaces/{alice.workspace_id}/dms")).json()
    # As opened, with my read state: nothing posted, nothing read.
    unread = {"last_read_message_id": None, "unread_count": 0, "mention_count": 0}
    assert mine == {"dms": [{**pair, **unread}, {**group, **unread}]}
    assert [m["username"] for m in group["members"]] == ["alice", "bob", "carol"]
    bobs = await (await bob.get(f"/api/workspaces/{alice.workspace_id}/dms")).json()
    assert len(bobs["dms"]) == 3


async def test_members_sockets_follow_a_new_dm(client: TestClient, people: People) -> None:
    alice, bob = await people.create("alice"), await people.create("bob")
    ws = await client.ws_connect("/api/ws", headers=bob.auth)
    try:
        assert (await ws.receive_json(timeout=TIMEOUT))["type"] == "hello"
        dm = await opened(alice, bob.user_id)
        await post(alice, dm["id"], "psst")
        frames = []
        while not frames or frames[-1]["type"] != "message.created":
            frames.append(await ws.receive_json(timeout=TIMEOUT))
        # Its own member_added subscribes bob's socket and tells it of the DM.
        added = [f for f in frames if f["type"] == "channel.member_added"]
        assert [(f["user"]["id"], f["channel"]["kind"]) for f in added] == [(bob.user_id, "dm")]
        assert frames[-1]["message"]["content"] == "psst"
    finally:
        await ws.close()


async def test_a_bot_in_a_dm_gets_its_messages_in_its_inbox(
    client: TestClient, people: People
) -> None:
    owner = await people.create("olive")
    bot = await make_bot(owner, "helper", "poll")
    dm = await opened(owner, bot.user_id)
    await post(owner, dm["id"], "do the thing")
    entries = await poll(bot, limit=100)
    assert [e["type"] for e in entries][-1] == "message.created"
    assert entries[-1]["body"]["message"]["content"] == "do the thing"
    # And the bot answers in it, as any member.
    await post(bot, dm["id"], "done")


async def test_a_member_back_in_the_workspace_is_back_in_the_dm(
    client: TestClient, people: People
) -> None:
    alice, bob = await people.create("alice"), await people.create("bob")
    dm = await opened(alice, bob.user_id)
    removed = await alice.delete(f"/api/workspaces/{alice.workspace_id}/members/{bob.user_id}")
    assert removed.status == 204, await removed.text()
    assert await error_of(await open_dm(alice, bob.user_id)) == (404, "user_not_found")
    listed = await (await alice.get(f"/api/workspaces/{alice.workspace_id}/dms")).json()
    assert [[m["username"] for m in d["members"]] for d in listed["dms"]] == [["alice"]]
    readded = await alice.post(
        f"/api/workspaces/{alice.workspace_id}/members", json={"username": "bob", "role": "member"}
    )
    assert readded.status in (200, 201), await readded.text()
    assert (await bob.get(f"/api/channels/{dm['id']}")).status == 404  # not by itself
    again = await opened(bob, alice.user_id, status=200)
    assert again["id"] == dm["id"]
    assert [m["username"] for m in again["members"]] == ["alice", "bob"]
    assert (await bob.get(f"/api/channels/{dm['id']}")).status == 200
