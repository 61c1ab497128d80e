"""A channel's lifecycle: rename and topic, archive (read-only), delete (with its files, on
both storage backends), who may do each, and the events that keep every client's list live."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from PIL import Image
from support.bots import make_bot, poll
from support.chat import assert_same_response, fetch, make_channel, post
from support.people import People, Person
from support.recording import recorder
from support.tickets import send as send_ticket
from support.tickets import ticket_for

from echora_server.config import CONFIG
from echora_server.db import channels as channels_db
from echora_server.db.pool import POOL
from echora_server.files.cleanup import sweep_once
from echora_server.realtime.events import (
    CHANNEL_ARCHIVED,
    CHANNEL_CREATED,
    CHANNEL_DELETED,
    CHANNEL_UNARCHIVED,
    CHANNEL_UPDATED,
)
from echora_server.realtime.hub import HUB
from echora_server.storage.base import StorageError
from echora_server.storage.factory import STORAGE

TIMEOUT = 10
BOTH_BACKENDS = pytest.mark.parametrize("config", ["local", "s3"], indirect=True)


def png_bytes() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


async def upload(person: Person, channel_id: int | None, *files: tuple[str, bytes]) -> list[Any]:
    form = aiohttp.FormData()
    if channel_id is None:
        form.add_field("workspace_id", str(person.workspace_id))
    else:
        form.add_field("channel_id", str(channel_id))
    for name, data in files:
        form.add_field("file", io.BytesIO(data), filename=name)
    response = await person.post("/api/upload", data=form)
    body = await response.json()
    assert response.status == 201, body
    return list(body["attachments"])


async def patch(person: Person, channel_id: int, **body: Any) -> aiohttp.ClientResponse:
    response: aiohttp.ClientResponse = await person.request(
        "PATCH", f"/api/channels/{channel_id}", json=body
    )
    return response


async def status_code(response: aiohttp.ClientResponse) -> str:
    body = await response.json() if response.status != 204 else {}
    return f"{response.status} {body.get('error', {}).get('code', '')}".strip()


async def stored_keys(client: TestClient) -> list[str]:
    return sorted([info.key async for info in client.app[STORAGE].list()])


async def connect(person: Person) -> aiohttp.ClientWebSocketResponse:
    ws = await person.client.ws_connect("/api/ws", headers=person.auth)
    assert (await ws.receive_json(timeout=TIMEOUT))["type"] == "hello"
    return ws


async def next_lifecycle(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    """The next channel lifecycle frame (membership and other frames skipped)."""
    while True:
        frame = dict(await ws.receive_json(timeout=TIMEOUT))
        if frame["type"].startswith("channel.") and "member" not in frame["type"]:
            return frame


async def test_members_rename_and_set_the_topic(client: TestClient, people: People) -> None:
    alice, bob = await people.create("alice"), await people.create("bob")
    carol = await people.create("carol")
    general = await make_channel(alice, "general")
    await make_channel(alice, "random")
    await bob.post(f"/api/channels/{general['id']}/join")

    response = await patch(bob, general["id"], name="  General-2 ", topic=" plans ")
    renamed = await response.json()
    assert response.status == 200, renamed
    assert (renamed["name"], renamed["topic"], renamed["joined"]) == ("General-2", "plans", True)
    topic_only = await (await patch(bob, general["id"], topic="")).json()
    assert (topic_only["name"], topic_only["topic"]) == ("General-2", "")
    listed = await (await carol.get(f"/api/channels?workspace_id={carol.workspace_id}")).json()
    assert [c["name"] for c in listed["channels"]] == ["General-2", "random"]

    assert await status_code(await patch(bob, general["id"], name="RANDOM")) == (
        "409 channel_name_taken"
    )
    assert await status_code(await patch(carol, general["id"], topic="x")) == (
        "403 not_channel_member"
    )
    for body in ({}, {"name": None}, {"name": ""}, {"name": "a\nb"}, {"topic": "t" * 251}):
        assert await status_code(await patch(bob, general["id"], **body)) == (
            "422 invalid_request"
        ), body
    same = await patch(bob, general["id"], name="General-2")  # no change: no event
    assert same.status == 200
    updates = recorder(client).of_type(CHANNEL_UPDATED)
    assert [e.data["channel"]["topic"] for e in updates] == ["plans", ""]
    shape = {k: v for k, v in renamed.items() if k != "joined"}
    assert updates[0].data == {"channel_id": general["id"], "channel": shape}


async def test_private_channels_are_changed_by_admins_in_them(
    client: TestClient, people: People
) -> None:
    owner = await people.create("olive", role="owner")
    admin = await people.create("adam", role="admin")
    member = await people.create("mia")
    outsider = await people.create("oscar", workspace="globex", role="owner")
    secret = await make_channel(member, "secret", private=True)
    await member.post(f"/api/channels/{secret['id']}/members", json={"user_id": admin.user_id})

    assert await status_code(await patch(member, secret["id"], topic="t")) == "403 forbidden"
    assert (await patch(admin, secret["id"], topic="by admin")).status == 200
    # Not in it: no such channel, even for the workspace's owner; nor across workspaces.
    for person in (owner, outsider):
        await assert_same_response(
            person,
            "PATCH",
            f"/api/channels/{secret['id']}",
            "/api/channels/999999",
            json={"topic": "x"},
        )
    # Public channels: owners and admins need not be in them.
    public = await make_channel(member, "public")
    assert (await patch(owner, public["id"], name="Public")).status == 200
    dm = await (
        await member.post(
            f"/api/workspaces/{member.workspace_id}/dms", json={"user_ids": [admin.user_id]}
        )
    ).json()
    assert await status_code(await patch(admin, dm["id"], topic="t")) == "403 direct_message"
    assert await status_code(await admin.post(f"/api/channels/{dm['id']}/archive")) == (
        "403 direct_message"
    )
    assert await status_code(await owner.delete(f"/api/channels/{dm['id']}")) == "404 not_found"
    assert await status_code(await admin.delete(f"/api/channels/{dm['id']}")) == (
        "403 direct_message"
    )


async def test_an_archived_channel_is_read_only(client: TestClient, people: People) -> None:
    alice, bob = await people.create("alice"), await people.create("bob")
    admin = await people.create("adam", role="admin")
    general = (await make_channel(alice, "general"))["id"]
    await bob.post(f"/api/channels/{general}/join")
    first = await post(bob, general, "before")
    await bob.request("PUT", f"/api/messages/{first['id']}/reactions/👍")

    assert await status_code(await bob.post(f"/api/channels/{general}/archive")) == (
        "403 forbidden"  # neither its creator nor an admin
    )
    archived = await alice.post(f"/api/channels/{general}/archive")
    assert archived.status == 200 and (await archived.json())["archived"] is True
    listed = await (await bob.get(f"/api/channels?workspace_id={bob.workspace_id}")).json()
    assert [c["archived"] for c in listed["channels"]] == [True]
    history = await (await bob.get(f"/api/channels/{general}/messages")).json()
    assert [m["content"] for m in history["messages"]] == ["before"]

    message = f"/api/messages/{first['id']}"
    refused = {
        "post": await bob.post(f"/api/channels/{general}/messages", json={"content": "x"}),
        "edit": await bob.request("PATCH", message, json={"content": "y"}),
        "delete": await admin.delete(message),
        "react": await bob.request("PUT", f"{message}/reactions/🎉"),
        "unreact": await bob.delete(f"{message}/reactions/👍"),
        "upload": await bob.post(
            "/api/upload", data={"channel_id": str(general), "file": io.BytesIO(b"x")}
        ),
        "ticket": await bob.post(
            "/api/uploads", json={"filename": "a.txt", "size": 1, "channel_id": general}
        ),
        "topic": await patch(alice, general, topic="t"),
        "join": await admin.post(f"/api/channels/{general}/join"),
    }
    assert {k: await status_code(r) for k, r in refused.items()} == dict.fromkeys(
        refused, "403 channel_archived"
    )
    ws = await connect(bob)
    await ws.send_json({"type": "message.send", "channel_id": general, "content": "z"})
    frame = await ws.receive_json(timeout=TIMEOUT)
    assert (frame["type"], frame["error"]["code"]) == ("error", "channel_archived")
    await ws.close()
    assert await fetch(client, "SELECT count(*) FROM messages") == 1
    assert await fetch(client, "SELECT count(*) FROM attachments") == 0

    # Leaving still works; unarchiving (an admin, here) opens it again.
    assert (await bob.post(f"/api/channels/{general}/leave")).status == 204
    again = await admin.post(f"/api/channels/{general}/unarchive")
    assert again.status == 200 and (await again.json())["archived"] is False
    assert (await alice.post(f"/api/channels/{general}/unarchive")).status == 200  # unchanged
    await post(alice, general, "after")
    kinds = [e.type for e in recorder(client).events if e.type.startswith("channel.")]
    assert [k for k in kinds if k in (CHANNEL_ARCHIVED, CHANNEL_UNARCHIVED)] == [
        CHANNEL_ARCHIVED,
        CHANNEL_UNARCHIVED,
    ]


@BOTH_BACKENDS
async def test_deleting_a_channel_deletes_its_messages_and_files(
    client: TestClient, people: People
) -> None:
    admin = await people.create("adam", role="admin")  # the first is the workspace's owner
    alice = await people.create("alice")
    general = (await make_channel(alice, "general"))["id"]
    kept_channel = (await make_channel(alice, "kept"))["id"]
    files = await upload(alice, general, ("p.png", png_bytes()), ("t.txt", b"text"))
    unscoped = await upload(alice, None, ("u.txt", b"any channel"))
    message = await post(alice, general, "files", attachment_ids=[a["id"] for a in files])
    await post(alice, general, "more", attachment_ids=[unscoped[0]["id"]])
    await alice.request("PUT", f"/api/messages/{message['id']}/reactions/👍")
    await upload(alice, general, ("unlinked.txt", b"never posted"))
    ticket = await ticket_for(alice, 5, channel_id=general)
    assert (await send_ticket(client, ticket, b"12345")).status in (200, 201, 204)
    elsewhere = await upload(alice, kept_channel, ("k.txt", b"kept"))
    await post(alice, kept_channel, "kept", attachment_ids=[elsewhere[0]["id"]])
    assert len(await stored_keys(client)) == 7  # png + thumbnail, 3 texts, ticket, kept

    assert await status_code(await alice.delete(f"/api/channels/{general}")) == "403 forbidden"
    assert (await admin.delete(f"/api/channels/{general}")).status == 204

    kept_key = await fetch(
        client, "SELECT storage_key FROM attachments WHERE id = $1", elsewhere[0]["id"]
    )
    assert await stored_keys(client) == [kept_key]
    for table, left in (
        ("messages", 1),
        ("attachments", 1),
        ("reactions", 0),
        ("upload_tickets", 0),
        ("channel_members", 1),
        ("storage_deletions", 0),
    ):
        assert await fetch(client, f"SELECT count(*) FROM {table}") == left, table
    assert await status_code(await alice.get(f"/api/channels/{general}")) == "404 not_found"
    # The audit log names who deleted the files.
    actors = await fetch(
        client, "SELECT array_agg(DISTINCT actor_id) FROM audit_log WHERE action = 'file.deleted'"
    )
    assert actors == [admin.user_id]
    (deleted,) = recorder(client).of_type(CHANNEL_DELETED)
    assert deleted.channel_id == general and deleted.data["channel"]["name"] == "general"


@BOTH_BACKENDS
async def test_objects_storage_refuses_stay_queued_until_the_sweep(
    client: TestClient, people: People, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = await people.create("adam", role="admin")
    general = (await make_channel(admin, "general"))["id"]
    files = await upload(admin, general, ("a.txt", b"a"), ("b.txt", b"b"))
    await post(admin, general, "files", attachment_ids=[a["id"] for a in files])
    keys = await stored_keys(client)
    storage = client.app[STORAGE]
    real_delete = storage.delete

    async def flaky_delete(key: str) -> None:
        if key == keys[0]:
            raise StorageError("storage is down")
        await real_delete(key)

    monkeypatch.setattr(storage, "delete", flaky_delete)
    assert (await admin.delete(f"/api/channels/{general}")).status == 204
    assert await fetch(client, "SELECT count(*) FROM attachments") == 0  # rows first
    assert await fetch(client, "SELECT array_agg(key) FROM storage_deletions") == [keys[0]]
    assert await stored_keys(client) == [keys[0]]

    monkeypatch.setattr(storage, "delete", real_delete)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    await sweep_once(client.app[POOL], storage, client.app[CONFIG], later)
    assert await stored_keys(client) == []
    assert await fetch(client, "SELECT count(*) FROM storage_deletions") == 0


async def test_lifecycle_events_reach_their_audience(client: TestClient, people: People) -> None:
    admin = await people.create("adam", role="admin")  # the first is the workspace's owner
    alice, bob = await people.create("alice"), await people.create("bob")
    carol = await people.create("carol")
    oscar = await people.create("oscar", workspace="globex")
    sockets = {p.username: await connect(p) for p in (alice, bob, carol, oscar)}

    # A private channel: its members only (bob is added, carol is not).
    secret = await make_channel(alice, "secret", private=True)
    await alice.post(f"/api/channels/{secret['id']}/members", json={"user_id": bob.user_id})
    assert (await patch(alice, secret["id"], topic="hush")).status == 403  # not an admin
    await alice.post(f"/api/channels/{secret['id']}/archive")
    # A public channel: the whole workspace, members or not.
    public = await make_channel(bob, "public")
    await patch(bob, public["id"], topic="open")
    await admin.delete(f"/api/channels/{public['id']}")

    seen: dict[str, list[tuple[str, str]]] = {}
    for name, count in (("alice", 5), ("bob", 4), ("carol", 3)):
        frames = [await next_lifecycle(sockets[name]) for _ in range(count)]
        seen[name] = [(f["type"], f["channel"]["name"]) for f in frames]
    public_events = [
        (CHANNEL_CREATED, "public"),
        (CHANNEL_UPDATED, "public"),
        (CHANNEL_DELETED, "public"),
    ]
    # bob was added to secret after its creation: he hears of it by member_added instead.
    assert seen == {
        "alice": [(CHANNEL_CREATED, "secret"), (CHANNEL_ARCHIVED, "secret"), *public_events],
        "bob": [(CHANNEL_ARCHIVED, "secret"), *public_events],
        "carol": public_events,
    }
    (created,) = [
        e for e in recorder(client).of_type(CHANNEL_CREATED) if e.channel_id == public["id"]
    ]
    assert created.data["channel"] == {k: v for k, v in public.items() if k != "joined"}
    # Another workspace hears nothing; the deleted channel's subscriptions are gone.
    await sockets["oscar"].send_json({"type": "typing", "channel_id": secret["id"]})
    frame = await sockets["oscar"].receive_json(timeout=TIMEOUT)
    assert frame["type"] == "error"  # its first frame since hello: no lifecycle event
    hub = client.app[HUB]
    assert public["id"] not in {c for s in hub._subscribers for c in s.channels}
    for ws in sockets.values():
        await ws.close()


async def test_a_poll_bot_in_the_channel_finds_its_lifecycle_in_its_inbox(
    client: TestClient, people: People
) -> None:
    owner = await people.create("olive")
    bot = await make_bot(owner, "poller", "poll")
    elsewhere = await make_bot(owner, "bystander", "poll")
    general = (await make_channel(owner, "general"))["id"]
    added = await owner.post(f"/api/channels/{general}/members", json={"user_id": bot.user_id})
    assert added.status == 201
    await patch(owner, general, topic="news")
    await owner.post(f"/api/channels/{general}/archive")
    assert (await owner.delete(f"/api/channels/{general}")).status == 204

    entries = await poll(bot)
    assert [e["type"] for e in entries] == [
        "channel.member_added",
        CHANNEL_UPDATED,
        CHANNEL_ARCHIVED,
        CHANNEL_DELETED,  # staged while the bot was still in the channel
    ]
    assert entries[-1]["body"]["channel"]["name"] == "general"
    assert await poll(elsewhere) == []


async def test_a_finalize_meeting_a_channel_delete_answers_404_and_leaves_nothing(
    client: TestClient, people: People
) -> None:
    """A channel delete under way holds the channel's row; a finalize into that channel
    waits for it (it takes the channel before the ticket, as the delete does), then finds
    the channel gone: 404, not a deadlock or a foreign-key error."""
    alice = await people.create("alice", role="admin")
    channel_id = int((await make_channel(alice, "doomed"))["id"])
    data = b"bytes for a channel about to go"
    ticket = await ticket_for(alice, len(data), channel_id=channel_id)
    assert (await send_ticket(client, ticket, data)).status == 200
    async with client.app[POOL].acquire() as conn:
        deleting = conn.transaction()
        await deleting.start()
        await conn.execute("SELECT id FROM channels WHERE id = $1 FOR UPDATE", channel_id)
        finalizing = asyncio.ensure_future(
            alice.post(f"/api/uploads/{ticket['id']}/finalize", json={"token": ticket["token"]})
        )
        await asyncio.sleep(0.5)  # it reaches the channel's lock and waits there
        assert not finalizing.done()
        keys = await channels_db.delete_channel(conn, channel_id)  # the delete's own rows
        await deleting.commit()
    response = await asyncio.wait_for(finalizing, 10)
    assert response.status == 404, await response.text()
    assert (await response.json())["error"]["code"] == "upload_not_found"
    assert len(keys) == 1  # the ticket's object, queued by the delete
    assert await fetch(client, "SELECT count(*) FROM attachments") == 0
    assert await fetch(client, "SELECT count(*) FROM upload_tickets") == 0
