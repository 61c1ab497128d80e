"""Presence in one server process, against real PostgreSQL: online, away and offline from a
user's sockets, the grace after the last one closes, the snapshot in ``hello``, coalescing,
workspaces apart, and a lease that ran out. Two processes: ``test_processes.py``.

"Hears nothing" is proven by order: after the action under test, another user's change that
the observer may hear is made, and the observer's next presence frame must be that one."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from support.bots import make_bot
from support.people import People, Person

from echora_server.db.pool import POOL
from echora_server.presence.service import PRESENCE

TIMEOUT = 10
GRACE = 0.3
LEASE = 1.0
INTERVAL = 0.15  # coalescing

Socket = aiohttp.ClientWebSocketResponse


@pytest.fixture
def config_overrides() -> dict[str, Any]:
    return {"presence_grace": GRACE, "presence_lease": LEASE, "presence_interval": INTERVAL}


async def connect(person: Person, *, watch: bool = False) -> tuple[Socket, dict[str, Any]]:
    path = "/api/ws?presence=1" if watch else "/api/ws"
    ws = await person.client.ws_connect(path, headers=person.auth)
    hello = await ws.receive_json(timeout=TIMEOUT)
    assert hello["type"] == "hello" and hello["user"]["id"] == person.user_id
    return ws, hello


async def next_presence(ws: Socket) -> dict[str, Any]:
    """The next presence frame (other events, such as a join, are passed over)."""
    while True:
        frame = dict(await ws.receive_json(timeout=TIMEOUT))
        if frame["type"].startswith("presence."):
            return frame


async def until(ws: Socket, user: Person, status: str) -> None:
    """Frames about ``user`` until one says ``status`` (its own socket's arrival comes first)."""
    while True:
        frame = await next_presence(ws)
        if frame == {"type": "presence.updated", "user_id": user.user_id, "status": status}:
            return


async def expect_next(ws: Socket, user: Person, status: str) -> None:
    frame = await next_presence(ws)
    assert frame == {"type": "presence.updated", "user_id": user.user_id, "status": status}


async def rows(client: TestClient) -> dict[str, int]:
    async with client.app[POOL].acquire() as conn:
        return {
            table: await conn.fetchval(f"SELECT count(*) FROM {table}")
            for table in ("presence", "presence_sockets")
        }


async def test_online_away_and_offline_after_the_grace(client: TestClient, people: People) -> None:
    alice, bob = await people.create("alice"), await people.create("bob")
    observer, hello = await connect(bob, watch=True)
    assert hello["presence"] == []  # bob's own socket counts once it is up
    await expect_next(observer, bob, "online")

    first, _ = await connect(alice)  # a socket that does not watch counts all the same
    await expect_next(observer, alice, "online")
    await first.send_json({"type": "presence", "status": "away"})
    await expect_next(observer, alice, "away")
    # A second socket is active: online. Away again only when every one of them is.
    second, _ = await connect(alice)
    await expect_next(observer, alice, "online")
    await second.send_json({"type": "presence", "status": "away"})
    await expect_next(observer, alice, "away")
    await second.send_json({"type": "presence", "status": "online"})
    await expect_next(observer, alice, "online")

    await asyncio.sleep(INTERVAL)  # past the coalescing window, to time the grace alone
    await second.close()  # lingers as it was (online) for the grace, then alice is away
    closed = time.monotonic()
    await expect_next(observer, alice, "away")
    assert time.monotonic() - closed >= GRACE * 0.8
    await asyncio.sleep(INTERVAL)
    await first.close()
    closed = time.monotonic()
    await expect_next(observer, alice, "offline")
    assert time.monotonic() - closed >= GRACE * 0.8
    await observer.close()
    # Nothing is kept: no row of anyone once the last socket's grace is over.
    await until_true(lambda: rows(client), {"presence": 0, "presence_sockets": 0})


async def until_true(read: Any, expected: Any, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while (value := await read()) != expected:
        assert time.monotonic() < deadline, value
        await asyncio.sleep(0.05)


async def test_a_reload_within_the_grace_does_not_show_offline(people: People) -> None:
    alice, bob, carol = [await people.create(name) for name in ("alice", "bob", "carol")]
    observer, _ = await connect(bob, watch=True)
    await expect_next(observer, bob, "online")
    tab, _ = await connect(alice)
    await expect_next(observer, alice, "online")
    await tab.close()
    tab, _ = await connect(alice)  # the reload: back before the grace is over
    await asyncio.sleep(GRACE * 1.5)
    sentinel, _ = await connect(carol)
    await expect_next(observer, carol, "online")  # and nothing of alice before it
    for ws in (tab, sentinel, observer):
        await ws.close()


async def test_the_hello_snapshot_and_workspaces_apart(people: People) -> None:
    alice, bob = await people.create("alice"), await people.create("bob")
    dave, erin = await people.create("dave", "other"), await people.create("erin", "other")
    tab, _ = await connect(alice)
    away, _ = await connect(bob)
    await away.send_json({"type": "presence", "status": "away"})
    watcher, _ = await connect(alice, watch=True)
    await until_snapshot(alice, [(alice, "online"), (bob, "away")])

    outsider, hello = await connect(dave, watch=True)
    assert hello["presence"] == []  # nobody of acme, though alice and bob are connected
    await expect_next(outsider, dave, "online")
    await tab.close()
    await away.close()
    await until(watcher, bob, "offline")
    carol = await people.create("carol")
    sentinel, _ = await connect(carol)
    await expect_next(watcher, carol, "online")  # alice's watching socket kept her online
    await sentinel.close()
    sentinel, _ = await connect(erin)
    await expect_next(outsider, erin, "online")  # nothing of alice or bob came before it
    _, hello = await connect(dave)
    assert hello == {
        "type": "hello",
        "user": hello["user"],
        "channel_ids": [],
    }  # without ?presence=1: no snapshot
    for ws in (watcher, outsider, sentinel):
        await ws.close()


async def until_snapshot(person: Person, expected: list[tuple[Person, str]]) -> None:
    """Connect until the hello's snapshot is ``expected`` (writes are asynchronous)."""
    want = [{"user_id": p.user_id, "status": s} for p, s in expected]
    deadline = time.monotonic() + TIMEOUT
    while True:
        ws, hello = await connect(person, watch=True)
        await ws.close()
        if hello["presence"] == want:
            return
        assert time.monotonic() < deadline, hello["presence"]
        await asyncio.sleep(0.05)


async def test_a_token_limited_to_one_workspace_hears_of_that_one_only(
    client: TestClient, people: People
) -> None:
    bob = await people.create("bob")
    dave = await people.create("dave", "other")
    alice = await people.create("alice")
    # alice is in both workspaces; her observer token is limited to "other".
    response = await dave.post(
        f"/api/workspaces/{dave.workspace_id}/members",
        json={"username": "alice", "role": "member"},
    )
    assert response.status in (200, 201), await response.text()
    response = await alice.post(
        "/api/tokens", json={"name": "other only", "workspace_id": dave.workspace_id}
    )
    assert response.status == 201, await response.text()
    limited = Person(
        client, alice.user_id, "alice", dave.workspace_id, (await response.json())["token"]
    )
    watcher, _ = await connect(limited, watch=True)
    await expect_next(watcher, alice, "online")
    tab, _ = await connect(bob)  # acme only
    sentinel, _ = await connect(dave)
    await expect_next(watcher, dave, "online")  # and nothing of bob before it
    for ws in (watcher, tab, sentinel):
        await ws.close()


async def test_removed_from_a_workspace_stops_hearing_of_it(people: People) -> None:
    owner, bob, carol = [await people.create(name) for name in ("olive", "bob", "carol")]
    dave = await people.create("dave", "other")  # owner of "other", where bob is too
    response = await dave.post(
        f"/api/workspaces/{dave.workspace_id}/members", json={"username": "bob"}
    )
    assert response.status == 201, await response.text()
    watcher, _ = await connect(bob, watch=True)
    await expect_next(watcher, bob, "online")
    response = await owner.delete(f"/api/workspaces/{owner.workspace_id}/members/{bob.user_id}")
    assert response.status == 204, await response.text()
    while (await watcher.receive_json(timeout=TIMEOUT))["type"] != "workspace.member_removed":
        pass
    tab, _ = await connect(carol)  # of acme only
    sentinel, _ = await connect(dave)
    await expect_next(watcher, dave, "online")  # and nothing of carol before it
    for ws in (watcher, tab, sentinel):
        await ws.close()


async def test_changes_are_coalesced_and_the_last_one_wins(people: People) -> None:
    alice, bob = await people.create("alice"), await people.create("bob")
    watcher, _ = await connect(bob, watch=True)
    await expect_next(watcher, bob, "online")
    tab, _ = await connect(alice)
    await expect_next(watcher, alice, "online")
    started = time.monotonic()
    for n in range(10):
        await tab.send_json({"type": "presence", "status": "away" if n % 2 == 0 else "online"})
    await tab.send_json({"type": "presence", "status": "away"})
    heard = [await next_presence(watcher)]
    while heard[-1]["status"] != "away" or time.monotonic() - started < INTERVAL * 1.2:
        try:
            heard.append(await asyncio.wait_for(next_presence(watcher), INTERVAL * 1.5))
        except TimeoutError:
            break
    # Eleven changes: at most one frame at once and one per window after it; the last is away.
    assert len(heard) <= 2 + (time.monotonic() - started) / INTERVAL, heard
    assert heard[-1] == {"type": "presence.updated", "user_id": alice.user_id, "status": "away"}
    for ws in (watcher, tab):
        await ws.close()


async def test_a_bot_on_a_websocket_is_online(people: People) -> None:
    owner = await people.create("olive", role="owner")
    bot = await make_bot(owner, "helper")
    watcher, _ = await connect(owner, watch=True)
    await expect_next(watcher, owner, "online")
    socket, _ = await connect(bot)
    await expect_next(watcher, bot, "online")
    await socket.close()
    await expect_next(watcher, bot, "offline")
    await watcher.close()


async def test_frames_are_checked(people: People) -> None:
    alice = await people.create("alice")
    ws, _ = await connect(alice)
    await ws.send_json({"type": "presence", "status": "offline", "ref": 7})
    frame = await ws.receive_json(timeout=TIMEOUT)
    assert (frame["type"], frame["ref"], frame["error"]["code"]) == (
        "error",
        7,
        "invalid_request",
    )
    await ws.close()


async def test_a_lost_lease_is_taken_again_without_anyone_going_offline(
    client: TestClient, people: People
) -> None:
    """As after the database was out of reach longer than the lease: the process's rows
    no longer count; it registers again under a new id and writes its users again."""
    alice, bob, carol = [await people.create(name) for name in ("alice", "bob", "carol")]
    watcher, _ = await connect(bob, watch=True)
    await expect_next(watcher, bob, "online")
    tab, _ = await connect(alice)
    await expect_next(watcher, alice, "online")
    presence = client.app[PRESENCE]
    lost = presence.process_id
    async with client.app[POOL].acquire() as conn:
        await conn.execute(
            "UPDATE presence_processes SET expires_at = now() - interval '1 s' WHERE id = $1", lost
        )
    deadline = time.monotonic() + TIMEOUT
    while presence.process_id == lost:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)

    async def processes() -> list[Any]:
        async with client.app[POOL].acquire() as conn:
            return [r["id"] for r in await conn.fetch("SELECT id FROM presence_processes")]

    await until_true(processes, [presence.process_id])  # the old one swept
    sentinel, _ = await connect(carol)
    await expect_next(watcher, carol, "online")  # alice and bob never went offline
    for ws in (watcher, tab, sentinel):
        await ws.close()
