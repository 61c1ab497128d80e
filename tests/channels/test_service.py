"""Channels and channel membership: visibility, who may change what, and their events."""

from __future__ import annotations

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from support.chat import (
    assert_same_response,
    fetch,
    make_channel,
    post,
    refuse_inserts_at_commit,
)
from support.people import People
from support.recording import RecordingFanout

from echora_server.db.pool import POOL
from echora_server.realtime.events import (
    CHANNEL_MEMBER_ADDED,
    CHANNEL_MEMBER_REMOVED,
    WORKSPACE_MEMBER_REMOVED,
)


async def test_create_and_list_channels(client: TestClient, people: People) -> None:
    owner = await people.create("olive")
    member = await people.create("mia")
    general = await make_channel(owner, "General", topic="  all hands  ")
    secret = await make_channel(owner, "secret", private=True)
    assert general["name"] == "General"
    assert general["topic"] == "all hands"
    assert (general["private"], general["joined"], general["created_by"]) == (
        False,
        True,
        owner.user_id,
    )
    assert secret["private"] is True

    path = f"/api/channels?workspace_id={owner.workspace_id}"
    mine = await (await owner.get(path)).json()
    assert [(c["name"], c["joined"]) for c in mine["channels"]] == [
        ("General", True),
        ("secret", True),
    ]
    theirs = await (await member.get(path)).json()
    assert [(c["name"], c["joined"]) for c in theirs["channels"]] == [("General", False)]
    single = await (await member.get(f"/api/channels/{general['id']}")).json()
    assert single == {**general, "joined": False}


async def test_channel_names_are_unique_per_workspace_ignoring_case(
    client: TestClient, people: People
) -> None:
    owner = await people.create("olive")
    other = await people.create("oscar", workspace="other")
    await make_channel(owner, "Random")
    taken = await owner.post(
        "/api/channels", json={"workspace_id": owner.workspace_id, "name": "rANDOM"}
    )
    assert taken.status == 409
    assert (await taken.json())["error"]["code"] == "channel_name_taken"
    # A private channel's name is taken too; another workspace may use it.
    await make_channel(owner, "hidden", private=True)
    again = await owner.post(
        "/api/channels", json={"workspace_id": owner.workspace_id, "name": "Hidden"}
    )
    assert again.status == 409
    await make_channel(other, "random")


@pytest.mark.parametrize(
    "body",
    [
        {"name": ""},
        {"name": "   "},
        {"name": "x" * 81},
        {"name": "bad\nname"},
        {"name": "evil\u202egnp.exe"},
        {"name": "ok", "topic": "t" * 251},
        {"name": "ok", "private": "perhaps"},
        {"name": "ok", "private": 0},  # JSON types are not coerced
        {"name": "ok", "unknown": 1},
    ],
)
async def test_invalid_channel_is_refused(
    client: TestClient, people: People, body: dict[str, object]
) -> None:
    owner = await people.create("olive")
    response = await owner.post("/api/channels", json={"workspace_id": owner.workspace_id, **body})
    assert response.status == 422
    assert (await response.json())["error"]["code"] == "invalid_request"
    assert await fetch(client, "SELECT count(*) FROM channels") == 0


async def test_ids_in_paths_are_ascii_digits(people: People) -> None:
    owner = await people.create("olive")
    await make_channel(owner, "general")
    for raw in ("\u00b2", "\u0661", "\uff11"):  # superscript two, Arabic-Indic and fullwidth one
        response = await owner.get(f"/api/channels/{raw}")
        assert response.status == 404, (raw, await response.text())


async def test_json_numbers_are_integers_only_without_a_fraction(people: People) -> None:
    owner = await people.create("olive")
    as_text = await owner.post(
        "/api/channels", json={"workspace_id": str(owner.workspace_id), "name": "a"}
    )
    assert as_text.status == 422, await as_text.text()
    whole = await owner.post(
        "/api/channels",
        data=f'{{"workspace_id": {owner.workspace_id}.0, "name": "b"}}',
        headers={"Content-Type": "application/json"},
    )
    assert whole.status == 201, await whole.text()  # 1.0 is an integer, as JSON Schema says
    half = await owner.post(
        "/api/channels",
        data=f'{{"workspace_id": {owner.workspace_id}.5, "name": "c"}}',
        headers={"Content-Type": "application/json"},
    )
    assert half.status == 422, await half.text()


async def test_listing_needs_a_valid_workspace_of_mine(client: TestClient, people: People) -> None:
    alice = await people.create("alice", workspace="a-corp")
    bob = await people.create("bob", workspace="b-corp")
    await make_channel(bob, "b-general")
    for query in ("", "?workspace_id=", "?workspace_id=abc", "?workspace_id=0"):
        response = await alice.get(f"/api/channels{query}")
        assert response.status == 422, query
        assert (await response.json())["error"]["code"] == "invalid_request"
    await assert_same_response(
        alice,
        "GET",
        f"/api/channels?workspace_id={bob.workspace_id}",
        f"/api/channels?workspace_id={bob.workspace_id + 1000}",
    )
    created = await alice.post(
        "/api/channels", json={"workspace_id": bob.workspace_id, "name": "x"}
    )
    assert created.status == 404
    assert await fetch(client, "SELECT count(*) FROM channels") == 1


async def test_join_and_leave_public_channel(
    client: TestClient, people: People, events: RecordingFanout
) -> None:
    owner = await people.create("olive")
    member = await people.create("mia")
    general = await make_channel(owner, "general")
    path = f"/api/channels/{general['id']}"
    assert [e.user_id for e in events.of_type(CHANNEL_MEMBER_ADDED)] == [owner.user_id]

    joined = await member.post(f"{path}/join")
    assert joined.status == 200
    assert (await joined.json())["joined"] is True
    assert (await member.post(f"{path}/join")).status == 200  # twice changes nothing
    added = events.of_type(CHANNEL_MEMBER_ADDED)
    assert [e.user_id for e in added] == [owner.user_id, member.user_id]
    assert added[1].channel_id == general["id"]
    assert added[1].data["channel"]["name"] == "general"
    assert added[1].data["user"]["username"] == "mia"

    listed = await (await member.get(f"{path}/members")).json()
    assert [m["username"] for m in listed["members"]] == ["mia", "olive"]

    assert (await member.post(f"{path}/leave")).status == 204
    assert (await member.post(f"{path}/leave")).status == 204  # not in it: nothing happens
    removed = events.of_type(CHANNEL_MEMBER_REMOVED)
    assert [(e.channel_id, e.user_id) for e in removed] == [(general["id"], member.user_id)]
    assert removed[0].data == {
        "channel_id": general["id"],
        "user": {"id": member.user_id, "username": "mia", "display_name": ""},
    }
    assert (await (await member.get(path)).json())["joined"] is False


async def test_private_channel_membership(
    client: TestClient, people: People, events: RecordingFanout
) -> None:
    owner = await people.create("olive")
    mia = await people.create("mia")
    max_ = await people.create("max")
    await people.create("zed", workspace="elsewhere")
    secret = await make_channel(owner, "secret", private=True)
    path = f"/api/channels/{secret['id']}"

    assert (await mia.post(f"{path}/join")).status == 404  # cannot join what you cannot see
    added = await owner.post(f"{path}/members", json={"username": "mia"})
    assert added.status == 201
    assert (await added.json())["username"] == "mia"
    again = await owner.post(f"{path}/members", json={"user_id": mia.user_id})
    assert again.status == 200
    assert [e.user_id for e in events.of_type(CHANNEL_MEMBER_ADDED)] == [
        owner.user_id,
        mia.user_id,
    ]

    # Any channel member may add a workspace member; nobody may add an outsider.
    assert (await mia.post(f"{path}/members", json={"username": "max"})).status == 201
    outsider = await mia.post(f"{path}/members", json={"username": "zed"})
    nobody = await mia.post(f"{path}/members", json={"username": "nobody"})
    assert outsider.status == nobody.status == 404
    assert await outsider.read() == await nobody.read()
    both = await mia.post(f"{path}/members", json={"username": "max", "user_id": max_.user_id})
    assert both.status == 422

    # Only owners and admins remove others; anyone removes themselves.
    assert (await mia.delete(f"{path}/members/{max_.user_id}")).status == 403
    assert (await mia.delete(f"{path}/members/{mia.user_id}")).status == 204
    assert (await mia.get(path)).status == 404
    assert (await owner.delete(f"{path}/members/{max_.user_id}")).status == 204
    assert (await owner.delete(f"{path}/members/{max_.user_id}")).status == 404
    listed = await (await owner.get(f"{path}/members")).json()
    assert [m["username"] for m in listed["members"]] == ["olive"]
    assert [e.user_id for e in events.of_type(CHANNEL_MEMBER_REMOVED)] == [
        mia.user_id,
        max_.user_id,
    ]


async def test_public_channel_needs_joining_to_add_others(
    client: TestClient, people: People
) -> None:
    owner = await people.create("olive")
    mia = await people.create("mia")
    await people.create("max")
    general = await make_channel(owner, "general")
    response = await mia.post(f"/api/channels/{general['id']}/members", json={"username": "max"})
    assert response.status == 403
    assert (await response.json())["error"]["code"] == "not_channel_member"


async def test_hidden_channel_looks_exactly_like_missing(
    client: TestClient, people: People
) -> None:
    owner = await people.create("olive")
    member = await people.create("mia")
    stranger = await people.create("sam", workspace="elsewhere")
    secret = await make_channel(owner, "secret", private=True)
    message = await post(owner, secret["id"], "classified")
    theirs, missing = f"/api/channels/{secret['id']}", f"/api/channels/{secret['id'] + 1000}"
    routes = [
        ("GET", "", None),
        ("POST", "/join", None),
        ("POST", "/leave", None),
        ("GET", "/members", None),
        ("POST", "/members", {"username": "mia"}),
        ("DELETE", f"/members/{owner.user_id}", None),
        ("DELETE", f"/members/{member.user_id}", None),
        ("POST", "/messages", {"content": "hi", "client_id": "c1"}),
        ("GET", "/messages", None),
        ("GET", "/messages?before=1000", None),
    ]
    for caller in (member, stranger):
        for method, suffix, body in routes:
            await assert_same_response(caller, method, theirs + suffix, missing + suffix, json=body)
        for method, body in (("PATCH", {"content": "mine now"}), ("DELETE", None)):
            await assert_same_response(
                caller,
                method,
                f"/api/messages/{message['id']}",
                f"/api/messages/{message['id'] + 1000}",
                json=body,
            )
    # Nothing changed behind the 404s.
    assert await fetch(client, "SELECT count(*) FROM channel_members") == 1
    assert await fetch(client, "SELECT content FROM messages") == "classified"


async def test_public_channel_of_another_workspace_looks_missing(
    client: TestClient, people: People
) -> None:
    owner = await people.create("olive")
    stranger = await people.create("sam", workspace="elsewhere")
    general = await make_channel(owner, "general")
    theirs, missing = f"/api/channels/{general['id']}", f"/api/channels/{general['id'] + 1000}"
    for method, suffix in (("GET", ""), ("POST", "/join"), ("GET", "/messages")):
        await assert_same_response(stranger, method, theirs + suffix, missing + suffix)
    assert await fetch(client, "SELECT count(*) FROM channel_members") == 1


async def test_workspace_scoped_token_cannot_reach_other_workspace_channels(
    client: TestClient, people: People
) -> None:
    alice = await people.create("alice", workspace="one")
    oscar = await people.create("oscar", workspace="two")
    await oscar.post(f"/api/workspaces/{oscar.workspace_id}/members", json={"username": "alice"})
    channel = await make_channel(oscar, "two-general")
    assert (await alice.get(f"/api/channels/{channel['id']}")).status == 200
    scoped = await (
        await alice.post("/api/tokens", json={"name": "bot", "workspace_id": alice.workspace_id})
    ).json()
    headers = {"Authorization": f"Bearer {scoped['token']}"}
    hidden = await client.get(f"/api/channels/{channel['id']}", headers=headers)
    assert hidden.status == 404


async def test_removed_channel_member_gets_404_at_once(client: TestClient, people: People) -> None:
    owner = await people.create("olive")
    mia = await people.create("mia")
    secret = await make_channel(owner, "secret", private=True)
    path = f"/api/channels/{secret['id']}"
    await owner.post(f"{path}/members", json={"username": "mia"})
    mine = await post(mia, secret["id"], "hello")
    assert (await mia.get(f"{path}/messages")).status == 200
    assert (await owner.delete(f"{path}/members/{mia.user_id}")).status == 204
    for method, url in (
        ("GET", f"{path}/messages"),
        ("GET", path),
        ("PATCH", f"/api/messages/{mine['id']}"),
        ("DELETE", f"/api/messages/{mine['id']}"),
    ):
        response = await mia.request(method, url, json={"content": "x"})
        assert response.status == 404, (method, url)
    refused = await mia.post(f"{path}/messages", json={"content": "still here?"})
    assert refused.status == 404


async def test_removed_workspace_member_leaves_every_channel(
    client: TestClient, people: People, events: RecordingFanout
) -> None:
    owner = await people.create("olive")
    mia = await people.create("mia")
    general = await make_channel(owner, "general")
    secret = await make_channel(owner, "secret", private=True)
    await mia.post(f"/api/channels/{general['id']}/join")
    await owner.post(f"/api/channels/{secret['id']}/members", json={"username": "mia"})
    elsewhere = await people.create("eve", workspace="elsewhere")
    await elsewhere.post(
        f"/api/workspaces/{elsewhere.workspace_id}/members", json={"username": "mia"}
    )
    kept = await make_channel(elsewhere, "kept")
    await mia.post(f"/api/channels/{kept['id']}/join")
    events.events.clear()

    removal = await owner.delete(f"/api/workspaces/{owner.workspace_id}/members/{mia.user_id}")
    assert removal.status == 204
    channel_ids = await fetch(
        client, "SELECT array_agg(channel_id) FROM channel_members WHERE user_id = $1", mia.user_id
    )
    assert channel_ids == [kept["id"]]  # the other workspace's channel is untouched
    assert [(e.type, e.channel_id, e.user_id) for e in events.events] == [
        (CHANNEL_MEMBER_REMOVED, general["id"], mia.user_id),
        (CHANNEL_MEMBER_REMOVED, secret["id"], mia.user_id),
        (WORKSPACE_MEMBER_REMOVED, None, mia.user_id),
    ]
    assert events.events[-1].workspace_id == owner.workspace_id
    assert events.events[-1].data["channel_ids"] == [general["id"], secret["id"]]

    assert (await mia.get(f"/api/channels/{general['id']}/messages")).status == 404
    # Added back to the workspace, they are not back in the private channel.
    await owner.post(f"/api/workspaces/{owner.workspace_id}/members", json={"username": "mia"})
    assert (await mia.get(f"/api/channels/{secret['id']}")).status == 404
    assert (await (await mia.get(f"/api/channels/{general['id']}")).json())["joined"] is False


async def test_schema_keeps_channel_members_inside_the_workspace(
    client: TestClient, people: People
) -> None:
    owner = await people.create("olive")
    mia = await people.create("mia")
    stranger = await people.create("sam", workspace="elsewhere")
    general = await make_channel(owner, "general")
    await mia.post(f"/api/channels/{general['id']}/join")
    async with client.app[POOL].acquire() as conn:
        for user_id, workspace_id in (
            (stranger.user_id, owner.workspace_id),  # not a member of the workspace
            (stranger.user_id, stranger.workspace_id),  # the channel is not in that workspace
        ):
            with pytest.raises(asyncpg.ForeignKeyViolationError):
                await conn.execute(
                    "INSERT INTO channel_members (channel_id, workspace_id, user_id)"
                    " VALUES ($1, $2, $3)",
                    general["id"],
                    workspace_id,
                    user_id,
                )
        # Whatever path deletes a workspace membership, the channel memberships go with it.
        await conn.execute(
            "DELETE FROM memberships WHERE workspace_id = $1 AND user_id = $2",
            owner.workspace_id,
            mia.user_id,
        )
        remaining = await conn.fetchval(
            "SELECT count(*) FROM channel_members WHERE user_id = $1", mia.user_id
        )
    assert remaining == 0


async def test_a_join_whose_event_cannot_be_stored_is_undone(
    client: TestClient, people: People, events: RecordingFanout
) -> None:
    """Membership events commit with the membership (PostgreSQL fan-out): an event that
    fails at COMMIT takes the join with it, so no member is left unannounced."""
    owner = await people.create("olive")
    member = await people.create("mia")
    general = await make_channel(owner, "general")
    await refuse_inserts_at_commit(client, "events")
    events.events.clear()
    response = await member.post(f"/api/channels/{general['id']}/join")
    assert response.status == 500
    joined = "SELECT count(*) FROM channel_members WHERE channel_id = $1 AND user_id = $2"
    assert await fetch(client, joined, general["id"], member.user_id) == 0
    assert events.events == []
