"""Read state: the position only moves forward, unread and mention counts in the channel and
DM lists (own and deleted messages aside, edits counted), one query per list whatever its
length, the refusals (404, nothing written), and ``channel.read`` on the member's own sockets
only, in every process."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient
from support.bots import make_bot, poll
from support.chat import assert_same_response, fetch, make_channel, post, tapped_client
from support.people import People, Person
from support.recording import RecordingFanout

from echora_server.app import create_app
from echora_server.config import Config
from echora_server.messages.mentions import mentioned_usernames
from echora_server.realtime.events import CHANNEL_READ

ClientFactory = Callable[..., Awaitable[TestClient]]
TIMEOUT = 10


async def mark(person: Person, channel_id: int, message_id: int) -> dict[str, Any]:
    response = await person.post(
        f"/api/channels/{channel_id}/read", json={"message_id": message_id}
    )
    assert response.status == 200, await response.text()
    return await response.json()  # type: ignore[no-any-return]


async def listed(person: Person) -> dict[int, dict[str, Any]]:
    response = await person.get("/api/channels", params={"workspace_id": str(person.workspace_id)})
    assert response.status == 200, await response.text()
    return {c["id"]: c for c in (await response.json())["channels"]}


def counts(channel: dict[str, Any]) -> tuple[int | None, int, int]:
    return channel["last_read_message_id"], channel["unread_count"], channel["mention_count"]


async def join(person: Person, channel_id: int) -> None:
    response = await person.post(f"/api/channels/{channel_id}/join")
    assert response.status == 200, await response.text()


async def edit(person: Person, message_id: int, content: str) -> None:
    response = await person.request(
        "PATCH", f"/api/messages/{message_id}", json={"content": content}
    )
    assert response.status == 200, await response.text()


async def test_the_position_only_moves_forward(people: People, events: RecordingFanout) -> None:
    alice, bob = await people.create("alice"), await people.create("bob")
    general = (await make_channel(alice, "general"))["id"]
    await join(bob, general)
    first, second, third = [(await post(bob, general, f"m{n}"))["id"] for n in range(3)]
    assert counts((await listed(alice))[general]) == (None, 3, 0)

    state = {"channel_id": general, "mention_count": 0}
    assert await mark(alice, general, second) == {
        **state,
        "last_read_message_id": second,
        "unread_count": 1,
    }
    # An older message (a tab that was behind): the newer position stays, and is the answer.
    assert await mark(alice, general, first) == {
        **state,
        "last_read_message_id": second,
        "unread_count": 1,
    }
    assert await mark(alice, general, second) == {
        **state,
        "last_read_message_id": second,
        "unread_count": 1,
    }
    assert counts((await listed(alice))[general]) == (second, 1, 0)
    assert (await mark(alice, general, third))["unread_count"] == 0
    assert counts((await listed(alice))[general]) == (third, 0, 0)
    assert counts((await listed(bob))[general]) == (None, 0, 0)  # all bob's own

    # Only the moves published, to alice alone (the channel is in the body, not the address).
    reads = events.of_type(CHANNEL_READ)
    assert [(e.user_id, e.channel_id, e.workspace_id) for e in reads] == [
        (alice.user_id, None, alice.workspace_id)
    ] * 2
    assert [e.data for e in reads] == [
        {**state, "last_read_message_id": second, "unread_count": 1},
        {**state, "last_read_message_id": third, "unread_count": 0},
    ]


async def test_counts_leave_out_my_own_and_deleted_messages_and_follow_edits(
    people: People,
) -> None:
    alice, bob, carol = [await people.create(n) for n in ("alice", "bob", "carol")]
    dave = await people.create("dave")  # of the workspace, not of the channel
    general = (await make_channel(alice, "general"))["id"]
    await post(alice, general, "before bob joined")
    await join(bob, general)
    await join(carol, general)
    await post(bob, general, "hello @alice and @dave")
    await post(alice, general, "mine, and @alice names myself")
    plain = (await post(carol, general, "no names here, mail bob@example.com"))["id"]
    gone = (await post(carol, general, "@Alice, soon deleted"))["id"]
    later = (await post(bob, general, "@alice."))["id"]  # the final dot is punctuation
    await post(bob, general, "@carol")
    await post(alice, general, "@bob @carol @nobody")

    # Before any position, bob counts from when he joined (alice's first is older).
    assert counts((await listed(bob))[general]) == (None, 4, 1)
    assert counts((await listed(alice))[general]) == (None, 5, 3)
    assert (await alice.delete(f"/api/messages/{gone}")).status == 204
    assert counts((await listed(alice))[general]) == (None, 4, 2)
    # An edit adding a mention counts it; one taking it out again no longer does.
    await edit(carol, plain, "now for @alice")
    assert counts((await listed(alice))[general]) == (None, 4, 3)
    await edit(carol, plain, "and not any more")
    assert counts((await listed(alice))[general]) == (None, 4, 2)
    await edit(carol, plain, "@ALICE again")
    assert counts((await listed(alice))[general]) == (None, 4, 3)

    assert (await mark(alice, general, later))["mention_count"] == 0
    assert counts((await listed(alice))[general]) == (later, 1, 0)
    # Only members of the channel, and never the author: dave, alice's own name, nobody.
    mentioned = await fetch(
        alice.client,
        "SELECT array_agg(u.username ORDER BY mm.message_id, u.username)"
        " FROM message_mentions mm JOIN users u ON u.id = mm.user_id",
    )
    assert mentioned == ["alice", "alice", "alice", "carol", "bob", "carol"]
    assert (await dave.get(f"/api/channels/{general}")).status == 200
    assert counts((await listed(dave))[general]) == (None, 0, 0)  # not in it


def test_what_counts_as_a_mention() -> None:
    assert mentioned_usernames("@Bob, @carol. and (@dave) @e-f_g.h") == [
        "bob",
        "carol",
        "carol.",
        "dave",
        "e-f_g.h",
    ]
    assert mentioned_usernames("bob@example.com @@bob a@b email@x.org @-x @") == []


async def test_direct_messages_list_their_counts(people: People) -> None:
    alice, bob, carol = [await people.create(n) for n in ("alice", "bob", "carol")]
    opened = await alice.post(
        f"/api/workspaces/{alice.workspace_id}/dms", json={"user_ids": [bob.user_id]}
    )
    dm = (await opened.json())["id"]
    group_opened = await bob.post(
        f"/api/workspaces/{alice.workspace_id}/dms",
        json={"user_ids": [alice.user_id, carol.user_id]},
    )
    group = (await group_opened.json())["id"]
    await post(bob, dm, "hi")
    seen = (await post(bob, dm, "@alice are you there"))["id"]
    await post(carol, group, "@bob only")

    async def dms(person: Person) -> dict[int, tuple[int | None, int, int]]:
        response = await person.get(f"/api/workspaces/{person.workspace_id}/dms")
        return {d["id"]: counts(d) for d in (await response.json())["dms"]}

    assert await dms(alice) == {dm: (None, 2, 1), group: (None, 1, 0)}
    assert await dms(bob) == {dm: (None, 0, 0), group: (None, 1, 1)}
    await mark(alice, dm, seen)
    assert await dms(alice) == {dm: (seen, 0, 0), group: (None, 1, 0)}


async def test_refusals_answer_404_and_write_nothing(
    people: People, events: RecordingFanout
) -> None:
    alice, carol = await people.create("alice"), await people.create("carol")
    dave = await people.create("dave", workspace="other")
    public = (await make_channel(alice, "general"))["id"]
    private = (await make_channel(alice, "secret", private=True))["id"]
    elsewhere = (await make_channel(alice, "elsewhere"))["id"]
    open_one = (await post(alice, public, "anyone here"))["id"]
    hidden = (await post(alice, private, "members only"))["id"]
    other = (await post(alice, elsewhere, "in another channel"))["id"]
    missing = f"/api/channels/{2**62}/read"

    def body(message_id: int) -> dict[str, Any]:
        return {"json": {"message_id": message_id}}

    # Carol may read the public channel but is not in it; the private one is not hers; dave
    # is of another workspace. Each answers as a missing channel would.
    for outsider, channel, message in (
        (carol, public, open_one),
        (carol, private, hidden),
        (dave, public, open_one),
        (dave, private, hidden),
    ):
        await assert_same_response(
            outsider, "POST", f"/api/channels/{channel}/read", missing, **body(message)
        )
    # A member, but the message is another channel's, or none.
    for message in (other, 2**62):
        response = await alice.post(f"/api/channels/{public}/read", **body(message))
        assert response.status == 404
        assert (await response.json())["error"]["code"] == "not_found"
    for bad in ({"message_id": 0}, {"message_id": "1"}, {}, {"message_id": 1, "x": 1}):
        response = await alice.post(f"/api/channels/{public}/read", json=bad)
        assert response.status == 422, bad
    assert await fetch(alice.client, "SELECT count(*) FROM read_states") == 0
    assert not events.of_type(CHANNEL_READ)
    assert (await mark(alice, public, open_one))["last_read_message_id"] == open_one


async def connect(client: TestClient, person: Person) -> aiohttp.ClientWebSocketResponse:
    ws = await client.ws_connect("/api/ws", headers=person.auth)
    assert (await ws.receive_json(timeout=TIMEOUT))["type"] == "hello"
    return ws


async def frames_until(ws: aiohttp.ClientWebSocketResponse, message_id: int) -> list[str]:
    """The types of the frames before the message.created of ``message_id``."""
    seen = []
    while True:
        frame = await ws.receive_json(timeout=TIMEOUT)
        if frame["type"] == "message.created" and frame["message"]["id"] == message_id:
            return seen
        seen.append(frame["type"])


async def test_the_event_reaches_all_my_sockets_in_every_process_and_no_one_else(
    config: Config, client: TestClient, people: People, aiohttp_client: ClientFactory
) -> None:
    assert config.fanout == "postgres"
    other_process = await aiohttp_client(create_app(config))
    alice, bob = await people.create("alice"), await people.create("bob")
    general = (await make_channel(alice, "general"))["id"]
    await join(bob, general)
    sockets = [
        await connect(client, alice),
        await connect(client, alice),
        await connect(other_process, alice),
    ]
    bobs = [await connect(client, bob), await connect(other_process, bob)]
    try:
        message = (await post(bob, general, "read me"))["id"]
        for ws in (*sockets, *bobs):  # what came before is behind every socket now
            await frames_until(ws, message)
        state = await mark(alice, general, message)
        for ws in sockets:
            assert await ws.receive_json(timeout=TIMEOUT) == {"type": CHANNEL_READ, **state}
        # Bob's sockets: the fan-out keeps order, so a later message comes after anything
        # alice's read would have sent them.
        sentinel = (await post(alice, general, "after the read"))["id"]
        for ws in bobs:
            assert await frames_until(ws, sentinel) == []
        for ws in sockets:
            assert await frames_until(ws, sentinel) == []
    finally:
        for ws in (*sockets, *bobs):
            await ws.close()


async def test_each_list_costs_the_same_queries_whatever_its_length(
    database_url: str, tmp_path: Path, aiohttp_client: ClientFactory
) -> None:
    async with tapped_client(database_url, tmp_path, aiohttp_client) as (client, pg):
        people = People(client)
        alice, bob = await people.create("alice"), await people.create("bob")

        async def listed(path: str) -> dict[str, Any]:
            response = await alice.get(path)
            assert response.status == 200
            return dict(await response.json())

        async def round_trips(path: str) -> tuple[int, dict[str, Any]]:
            return await pg.fewest_round_trips(lambda: listed(path))

        channels = f"/api/channels?workspace_id={alice.workspace_id}"
        dms = f"/api/workspaces/{alice.workspace_id}/dms"
        first = (await make_channel(alice, "c0"))["id"]
        await join(bob, first)
        await post(bob, first, "@alice")
        opened = await alice.post(
            f"/api/workspaces/{alice.workspace_id}/dms", json={"user_ids": [bob.user_id]}
        )
        await post(bob, (await opened.json())["id"], "hi")
        one, small = await round_trips(channels)
        one_dm, _ = await round_trips(dms)
        for n in range(1, 8):
            channel = (await make_channel(alice, f"c{n}"))["id"]
            await join(bob, channel)
            await post(bob, channel, f"@alice {n}")
        many, large = await round_trips(channels)
        assert len(small["channels"]) == 1 and len(large["channels"]) == 8
        assert all(counts(c) == (None, 1, 1) for c in large["channels"])
        assert one == many
        carol = await people.create("carol")
        for ids in ([carol.user_id], [bob.user_id, carol.user_id]):
            await alice.post(f"/api/workspaces/{alice.workspace_id}/dms", json={"user_ids": ids})
        many_dms, listed_dms = await round_trips(dms)
        assert len(listed_dms["dms"]) == 3
        assert one_dm == many_dms


async def test_a_bots_inbox_records_its_own_reads_only(people: People) -> None:
    alice = await people.create("alice")
    bot = await make_bot(alice, "helper")
    general = (await make_channel(alice, "general"))["id"]
    added = await alice.post(f"/api/channels/{general}/members", json={"user_id": bot.user_id})
    assert added.status == 201
    message = (await post(alice, general, "@helper have a look"))["id"]
    await mark(alice, general, message)  # alice's read: not the bot's business
    state = await mark(bot, general, message)
    assert state == {
        "channel_id": general,
        "last_read_message_id": message,
        "unread_count": 0,
        "mention_count": 0,
    }
    entries = [(e["type"], e["body"]) for e in await poll(bot)]
    assert [kind for kind, _ in entries] == [
        "channel.member_added",
        "message.created",
        CHANNEL_READ,
    ]
    assert entries[-1][1] == state


async def test_leaving_forgets_the_position_and_rejoining_counts_from_then(
    people: People,
) -> None:
    alice, bob = await people.create("alice"), await people.create("bob")
    general = (await make_channel(bob, "general"))["id"]
    await join(alice, general)
    read = (await post(bob, general, "read"))["id"]
    await mark(alice, general, read)
    await post(bob, general, "while she is in")
    assert (await alice.post(f"/api/channels/{general}/leave")).status == 204
    assert await fetch(alice.client, "SELECT count(*) FROM read_states") == 0
    assert counts((await listed(alice))[general]) == (None, 0, 0)
    refused = await alice.post(f"/api/channels/{general}/read", json={"message_id": read})
    assert refused.status == 404
    await post(bob, general, "while she is out")
    await join(alice, general)
    await post(bob, general, "@alice welcome back")
    assert counts((await listed(alice))[general]) == (None, 1, 1)
