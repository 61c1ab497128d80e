"""The WebSocket: authentication, delivery to members only, frames, errors, shutdown, gaps.

"Receives nothing" is proven by order, not by waiting: after the action under test, a
sentinel message is posted where the observer may see it, and the observer's very next
frame must be that sentinel.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient, TestServer
from support.people import PASSWORD, People, Person

from echora_server.app import create_app
from echora_server.config import Config
from echora_server.db.pool import POOL
from echora_server.realtime.bus import BUS
from echora_server.realtime.events import Event
from echora_server.realtime.hub import HUB

ClientFactory = Callable[..., Awaitable[TestClient]]
TIMEOUT = 10


@dataclass
class Room:
    alice: Person
    bob: Person
    carol: Person  # same workspace, not in the channel
    dave: Person  # another workspace
    channel_id: int
    side_channel_id: int  # a public channel everyone in acme is in


async def make_channel(person: Person, name: str, private: bool = False) -> int:
    response = await person.post(
        "/api/channels",
        json={"workspace_id": person.workspace_id, "name": name, "private": private},
    )
    assert response.status == 201, await response.text()
    return int((await response.json())["id"])


async def join(person: Person, channel_id: int) -> None:
    response = await person.post(f"/api/channels/{channel_id}/join")
    assert response.status in (200, 204), await response.text()


async def post(person: Person, channel_id: int, content: str, **extra: Any) -> dict[str, Any]:
    response = await person.post(
        f"/api/channels/{channel_id}/messages", json={"content": content, **extra}
    )
    assert response.status in (200, 201), await response.text()
    return dict(await response.json())


@pytest.fixture
async def room(people: People) -> Room:
    alice = await people.create("alice")
    bob = await people.create("bob")
    carol = await people.create("carol")
    dave = await people.create("dave", workspace="other")
    channel_id = await make_channel(alice, "secret", private=True)
    add = await alice.post(f"/api/channels/{channel_id}/members", json={"username": "bob"})
    assert add.status in (200, 201), await add.text()
    side = await make_channel(alice, "general")
    for person in (bob, carol):
        await join(person, side)
    await settle(alice, side)
    return Room(alice, bob, carol, dave, channel_id, side)


async def settle(person: Person, channel_id: int) -> None:
    """Wait until every event published so far went through the fan-out (it keeps order),
    so sockets opened afterwards see only what the test itself causes."""
    ws = await connect(person)
    marker = await post(person, channel_id, "settled")
    while (await next_frame(ws)).get("message", {}).get("id") != marker["id"]:
        pass
    await ws.close()


async def connect(person: Person, **kw: Any) -> aiohttp.ClientWebSocketResponse:
    ws = await person.client.ws_connect("/api/ws", headers=person.auth, **kw)
    hello = await ws.receive_json(timeout=TIMEOUT)
    assert hello["type"] == "hello" and hello["user"]["id"] == person.user_id
    return ws


async def next_frame(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    return dict(await ws.receive_json(timeout=TIMEOUT))


async def server_close_code(ws: aiohttp.ClientWebSocketResponse) -> int:
    """The code in the server's close frame (skipping any frames still queued before it)."""
    while True:
        msg = await ws.receive(timeout=TIMEOUT)
        if msg.type == WSMsgType.CLOSE:
            return int(msg.data)
        assert msg.type == WSMsgType.TEXT, msg


async def expect_only_sentinel(
    ws: aiohttp.ClientWebSocketResponse, sentinel: dict[str, Any]
) -> None:
    frame = await next_frame(ws)
    assert frame["type"] == "message.created", frame
    assert frame["message"]["id"] == sentinel["id"], frame


async def test_members_see_each_others_messages_in_order(room: Room) -> None:
    ws_alice, ws_bob = await connect(room.alice), await connect(room.bob)
    sent = []
    for i in range(5):
        await ws_alice.send_json(
            {"type": "message.send", "channel_id": room.channel_id, "content": f"m{i}", "ref": i}
        )
        ack = await next_frame(ws_alice)
        while ack["type"] != "message.ack":  # alice also receives her own message.created
            assert ack["type"] == "message.created"
            ack = await next_frame(ws_alice)
        assert ack["ref"] == i and ack["message"]["content"] == f"m{i}"
        sent.append(ack["message"])
    received = [await next_frame(ws_bob) for _ in range(5)]
    assert [f["type"] for f in received] == ["message.created"] * 5
    assert [f["message"] for f in received] == sent
    assert [m["id"] for m in sent] == sorted(m["id"] for m in sent)
    reply = await post(room.bob, room.channel_id, "hi alice")
    created = []  # alice's own messages come back to her too, then bob's reply
    while not created or created[-1] != reply["id"]:
        frame = await next_frame(ws_alice)
        assert frame["type"] == "message.created"
        created.append(frame["message"]["id"])
    assert created[-1] == reply["id"]
    await ws_alice.close()
    await ws_bob.close()


async def test_outsiders_get_no_event_and_404(room: Room) -> None:
    dave_channel = await make_channel(room.dave, "dave-only")
    await settle(room.dave, dave_channel)
    ws_carol, ws_dave = await connect(room.carol), await connect(room.dave)
    await post(room.alice, room.channel_id, "members only")
    for outsider in (room.carol, room.dave):
        response = await outsider.get(f"/api/channels/{room.channel_id}/messages")
        assert response.status == 404
    sentinel = await post(room.alice, room.side_channel_id, "sentinel")
    await expect_only_sentinel(ws_carol, sentinel)
    dave_sentinel = await post(room.dave, dave_channel, "sentinel")
    await expect_only_sentinel(ws_dave, dave_sentinel)
    # An outsider's send over the socket is refused like a missing channel.
    await ws_dave.send_json(
        {"type": "message.send", "channel_id": room.channel_id, "content": "x", "ref": "r"}
    )
    error = await next_frame(ws_dave)
    assert error["type"] == "error" and error["ref"] == "r"
    assert error["error"]["code"] == "not_found"


async def test_removed_member_stops_receiving_at_once(room: Room) -> None:
    ws_bob = await connect(room.bob)
    removed = await room.alice.delete(f"/api/channels/{room.channel_id}/members/{room.bob.user_id}")
    assert removed.status == 204
    notice = await next_frame(ws_bob)
    assert notice["type"] == "channel.member_removed"
    await post(room.alice, room.channel_id, "after bob left")
    sentinel = await post(room.alice, room.side_channel_id, "sentinel")
    await expect_only_sentinel(ws_bob, sentinel)


async def test_removed_workspace_member_stops_receiving(room: Room) -> None:
    # Bob is also in Dave's workspace, where the sentinel will come from.
    invite = await room.dave.post(
        f"/api/workspaces/{room.dave.workspace_id}/members", json={"username": "bob"}
    )
    assert invite.status == 201
    elsewhere = await make_channel(room.dave, "elsewhere")
    await join(room.bob, elsewhere)
    await settle(room.dave, elsewhere)
    ws_bob = await connect(room.bob)
    path = f"/api/workspaces/{room.alice.workspace_id}/members/{room.bob.user_id}"
    assert (await room.alice.delete(path)).status == 204
    removed = []  # one notice per channel he was in, then the workspace one
    while (notice := await next_frame(ws_bob))["type"] != "workspace.member_removed":
        removed.append((notice["type"], notice["channel_id"]))
    assert sorted(removed) == sorted(
        [
            ("channel.member_removed", room.channel_id),
            ("channel.member_removed", room.side_channel_id),
        ]
    )
    await post(room.alice, room.side_channel_id, "bob is gone")
    await post(room.alice, room.channel_id, "bob is gone")
    sentinel = await post(room.dave, elsewhere, "sentinel")
    await expect_only_sentinel(ws_bob, sentinel)


async def test_rolled_back_write_emits_no_event(room: Room) -> None:
    ws_bob = await connect(room.bob)
    async with room.alice.client.app[POOL].acquire() as conn:
        # A real failure inside the message transaction, after the row was inserted.
        await conn.execute(
            """
            CREATE FUNCTION refuse_boom() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.content = 'boom' THEN RAISE EXCEPTION 'refused'; END IF;
                RETURN NEW;
            END $$;
            CREATE TRIGGER refuse_boom AFTER INSERT ON messages
                FOR EACH ROW EXECUTE FUNCTION refuse_boom();
            """
        )
    failed = await room.alice.post(
        f"/api/channels/{room.channel_id}/messages", json={"content": "boom"}
    )
    assert failed.status == 500
    async with room.alice.client.app[POOL].acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM messages WHERE content = 'boom'") == 0
    sentinel = await post(room.alice, room.channel_id, "after the failure")
    await expect_only_sentinel(ws_bob, sentinel)


async def test_bad_frames_get_error_frames_and_others_keep_being_served(room: Room) -> None:
    ws_alice, ws_bob = await connect(room.alice), await connect(room.bob)
    await ws_alice.send_str("{not json")
    assert (await next_frame(ws_alice))["error"]["code"] == "invalid_json"
    await ws_alice.send_json({"type": "dance"})
    assert (await next_frame(ws_alice))["error"]["code"] == "unknown_type"
    await ws_alice.send_json({"type": "message.send", "channel_id": "x", "ref": 7})
    invalid = await next_frame(ws_alice)
    assert invalid["error"]["code"] == "invalid_request" and invalid["ref"] == 7
    await ws_alice.send_json([1, 2])
    assert (await next_frame(ws_alice))["error"]["code"] == "unknown_type"

    await ws_alice.send_bytes(b"\x00binary")
    assert await server_close_code(ws_alice) == 1003

    ws_big = await connect(room.alice)
    await ws_big.send_str(json.dumps({"type": "ping", "pad": "x" * (70 * 1024)}))
    assert await server_close_code(ws_big) == 1009

    sentinel = await post(room.alice, room.channel_id, "still serving")
    await expect_only_sentinel(ws_bob, sentinel)


async def test_ids_beyond_bigint_are_invalid_not_internal_errors(room: Room) -> None:
    huge = 2**63
    ws = await room.alice.client.ws_connect(f"/api/ws?after_id={huge}", headers=room.alice.auth)
    assert (await next_frame(ws))["type"] == "hello"
    await ws.send_json({"type": "ping", "ref": 1})
    assert await next_frame(ws) == {"type": "pong", "ref": 1}  # no resume was tried
    for frame in (
        {"type": "message.send", "channel_id": huge, "content": "x", "ref": 2},
        {"type": "resume", "after_id": huge, "ref": 2},
    ):
        await ws.send_json(frame)
        answer = await next_frame(ws)
        assert answer["error"]["code"] == "invalid_request" and answer["ref"] == 2, answer
    await ws.close()


async def test_duplicate_client_id_creates_no_duplicate(room: Room) -> None:
    ws_alice, ws_bob = await connect(room.alice), await connect(room.bob)
    frame = {"type": "message.send", "channel_id": room.channel_id, "content": "once"}
    acks = []
    for ref in ("a", "b"):
        await ws_alice.send_json({**frame, "client_id": "retry-1", "ref": ref})
        while (got := await next_frame(ws_alice))["type"] != "message.ack":
            pass
        acks.append(got)
    assert acks[0]["message"]["id"] == acks[1]["message"]["id"]
    first = await next_frame(ws_bob)
    assert first["message"]["id"] == acks[0]["message"]["id"]
    sentinel = await post(room.alice, room.side_channel_id, "sentinel")
    await expect_only_sentinel(ws_bob, sentinel)  # no second message.created
    async with room.alice.client.app[POOL].acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM messages WHERE client_id = 'retry-1'") == 1


async def test_cross_site_origin_with_valid_cookie_is_refused_before_upgrade(
    client: TestClient, room: Room
) -> None:
    login = await client.post("/api/auth/login", json={"username": "bob", "password": PASSWORD})
    assert login.status == 200
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await client.ws_connect("/api/ws", headers={"Origin": "https://evil.example"})
    assert info.value.status == 403
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await client.ws_connect("/api/ws")  # a cookie and no Origin at all
    assert info.value.status == 403
    own = str(client.make_url("/")).rstrip("/")
    ws = await client.ws_connect("/api/ws", headers={"Origin": own})
    assert (await ws.receive_json(timeout=TIMEOUT))["type"] == "hello"
    await ws.close()


async def test_unauthenticated_handshake_gets_json_401(client: TestClient) -> None:
    response = await client.get(
        "/api/ws",
        headers={
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        },
    )
    assert response.status == 401
    assert (await response.json())["error"]["code"] == "auth_required"


async def test_reconnect_with_last_seen_id_gets_the_gap(room: Room) -> None:
    ws_bob = await connect(room.bob)
    seen = await post(room.alice, room.channel_id, "seen")
    assert (await next_frame(ws_bob))["message"]["id"] == seen["id"]
    await ws_bob.close()
    missed = [await post(room.alice, room.channel_id, f"missed {i}") for i in range(3)]
    missed.append(await post(room.alice, room.side_channel_id, "missed elsewhere"))
    await post(room.carol, room.side_channel_id, "also missed")
    # Let those events pass the fan-out before bob is back, so they reach him only by replay.
    await settle(room.dave, await make_channel(room.dave, "probe"))
    ws_bob = await room.bob.client.ws_connect(
        f"/api/ws?after_id={seen['id']}", headers=room.bob.auth
    )
    assert (await next_frame(ws_bob))["type"] == "hello"
    replay = []
    while (frame := await next_frame(ws_bob))["type"] != "resume.done":
        replay.append(frame["message"])
    assert [m["id"] for m in replay][:4] == [m["id"] for m in missed]
    assert len(replay) == 5 and frame["count"] == 5 and frame["has_more"] is False
    # The same through a resume frame on an open socket.
    await ws_bob.send_json({"type": "resume", "after_id": missed[-1]["id"]})
    replay2 = []
    while (frame := await next_frame(ws_bob))["type"] != "resume.done":
        replay2.append(frame["message"]["content"])
    assert replay2 == ["also missed"]


async def test_slow_consumer_is_closed_and_others_are_not_slowed(
    config: Config, aiohttp_client: ClientFactory
) -> None:
    app = create_app(config.model_copy(update={"fanout": "memory", "ws_send_buffer": 192 * 1024}))
    client = await aiohttp_client(app)
    people = People(client)
    alice, bob = await people.create("alice"), await people.create("bob")
    channel_id = await make_channel(alice, "busy")
    await join(bob, channel_id)
    slow = await connect(bob)  # never reads from here on
    fast = await connect(alice)
    payload = {"channel_id": channel_id, "blob": "x" * 60_000}
    for n in range(1000):  # up to 60 MB: far beyond every socket buffer on the way
        await app[BUS].publish(
            Event("test.blob", alice.workspace_id, channel_id, {**payload, "n": n})
        )
        frame = await next_frame(fast)
        assert frame["n"] == n
        if len(app[HUB]) == 1:
            break
    assert len(app[HUB]) == 1, "the slow consumer was never dropped"
    assert await server_close_code(slow) == 1013


async def test_frames_of_every_length_encoding_arrive_intact(
    config: Config, aiohttp_client: ClientFactory
) -> None:
    """The hub frames each event itself: 7-bit, 16-bit and 64-bit payload lengths, at
    their edges, and several frames coalesced into one write, all parse as sent."""
    app = create_app(config.model_copy(update={"fanout": "memory"}))
    people = People(await aiohttp_client(app))
    alice = await people.create("alice")
    channel_id = await make_channel(alice, "sizes")
    ws = await connect(alice)
    sizes = [125, 126, 127, 65_535, 65_536, 150_000, 200]

    def body(n: int, size: int) -> dict[str, Any]:
        data = {"channel_id": channel_id, "n": n, "blob": ""}
        empty = len(json.dumps({"type": "test.blob", **data}, separators=(",", ":")))
        return {**data, "blob": "x" * (size - empty)}

    for n, size in enumerate(sizes):  # published back to back: one write may carry several
        await app[BUS].publish(Event("test.blob", alice.workspace_id, channel_id, body(n, size)))
    for n, size in enumerate(sizes):
        msg = await ws.receive(timeout=TIMEOUT)
        assert msg.type == WSMsgType.TEXT and len(msg.data) == size
        assert json.loads(msg.data)["n"] == n


async def test_shutdown_closes_sockets_with_1001(room: Room, config: Config) -> None:
    server = TestServer(create_app(config))
    await server.start_server()
    session = aiohttp.ClientSession()
    try:
        ws = await session.ws_connect(server.make_url("/api/ws"), headers=room.bob.auth)
        assert (await ws.receive_json(timeout=TIMEOUT))["type"] == "hello"
        await server.close()
        assert await server_close_code(ws) == 1001
    finally:
        await session.close()


async def test_revoking_a_token_closes_its_sockets(room: Room) -> None:
    created = await (await room.bob.post("/api/tokens", json={"name": "second"})).json()
    second = {"Authorization": f"Bearer {created['token']}"}
    doomed = await room.bob.client.ws_connect("/api/ws", headers=second)
    assert (await next_frame(doomed))["type"] == "hello"
    survivor = await connect(room.bob)  # another token of the same user
    assert (await room.bob.delete(f"/api/tokens/{created['id']}")).status == 204
    assert await server_close_code(doomed) == 1008
    sentinel = await post(room.alice, room.channel_id, "still here")
    await expect_only_sentinel(survivor, sentinel)


async def test_logging_out_closes_the_sessions_sockets(client: TestClient, room: Room) -> None:
    assert (
        await client.post("/api/auth/login", json={"username": "bob", "password": PASSWORD})
    ).status == 200
    own = str(client.make_url("/")).rstrip("/")
    ws = await client.ws_connect("/api/ws", headers={"Origin": own})
    assert (await next_frame(ws))["type"] == "hello"
    assert (await client.post("/api/auth/logout", headers={"Origin": own})).status == 200
    assert await server_close_code(ws) == 1008


async def test_websocket_and_rest_store_the_same_text(room: Room) -> None:
    """One validation model: whitespace is content on both paths, and so are the limits."""
    text = "  indented code\n\tand a tab  \n\n"
    ws = await connect(room.alice)
    await ws.send_json(
        {"type": "message.send", "channel_id": room.channel_id, "content": text, "ref": 1}
    )
    while (ack := await next_frame(ws))["type"] != "message.ack":
        pass
    by_rest = await post(room.alice, room.channel_id, text)
    assert ack["message"]["content"] == by_rest["content"] == text
    history = await room.alice.get(f"/api/channels/{room.channel_id}/messages?limit=2")
    assert [m["content"] for m in (await history.json())["messages"]] == [text, text]

    too_long = "x" * 4001
    await ws.send_json(
        {"type": "message.send", "channel_id": room.channel_id, "content": too_long, "ref": 2}
    )
    while (error := await next_frame(ws))["type"] != "error":
        pass
    by_rest_refused = await room.alice.post(
        f"/api/channels/{room.channel_id}/messages", json={"content": too_long}
    )
    assert by_rest_refused.status == 422
    assert error["error"]["code"] == (await by_rest_refused.json())["error"]["code"]
    await ws.close()


async def test_typing_reaches_the_channels_sockets_at_most_every_two_seconds(
    room: Room,
) -> None:
    ws_alice, ws_bob, ws_carol = (
        await connect(room.alice),
        await connect(room.bob),
        await connect(room.carol),
    )
    await ws_alice.send_json({"type": "typing", "channel_id": room.channel_id})
    frame = await next_frame(ws_bob)
    assert frame == {
        "type": "typing",
        "channel_id": room.channel_id,
        "user_id": room.alice.user_id,
        "username": "alice",
    }
    # Again at once: dropped, without an answer. The next thing bob sees is a message.
    await ws_alice.send_json({"type": "typing", "channel_id": room.channel_id})
    sentinel = await post(room.alice, room.channel_id, "after typing")
    await expect_only_sentinel(ws_bob, sentinel)
    # Carol is not in the private channel: refused, and bob hears nothing of it.
    await ws_carol.send_json({"type": "typing", "channel_id": room.channel_id, "ref": 1})
    refused = await next_frame(ws_carol)
    assert (refused["type"], refused["ref"], refused["error"]["code"]) == ("error", 1, "not_found")
    sentinel = await post(room.alice, room.channel_id, "still only messages")
    await expect_only_sentinel(ws_bob, sentinel)
    for ws in (ws_alice, ws_bob, ws_carol):
        await ws.close()
