"""Poll and acknowledge: the oldest unacknowledged entries, leased so two polls never hold one
entry at once, returned again when a lease runs out (at least once), never after their
acknowledgement or expiry; long polls woken by a commit in any process; a bot sees its own
inbox only; a bot's download of a file stamps the entries carrying it."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from support.bots import ack, make_bot, poll
from support.chat import fetch, make_channel, post
from support.people import People, Person

from echora_server.agents.inbox import InboxService, InboxWaiters
from echora_server.agents.sweeper import sweep_once
from echora_server.app import create_app
from echora_server.auth.identity import Identity
from echora_server.config import Config
from echora_server.core.errors import NotFound
from echora_server.db import users
from echora_server.db.pool import POOL

LEASE = 60.0


async def channel_with_bot(
    owner: Person, delivery: str = "poll", name: str = "general", *, private: bool = False
) -> tuple[int, Person]:
    """A channel with a fresh bot in it, whose inbox starts empty (its own joining acked)."""
    bot = await make_bot(owner, f"bot-{name}", delivery)  # type: ignore[arg-type]
    channel_id = (await make_channel(owner, name, private=private))["id"]
    added = await owner.post(f"/api/channels/{channel_id}/members", json={"user_id": bot.user_id})
    assert added.status == 201
    joined = await poll(bot)
    assert [e["type"] for e in joined] == ["channel.member_added"]
    assert (await ack(bot, joined[0]["id"])).status == 200
    return channel_id, bot


async def test_a_poll_returns_the_oldest_entries_and_leases_them(
    client: TestClient, people: People
) -> None:
    owner = await people.create("olive")
    general, bot = await channel_with_bot(owner)
    posted = [await post(owner, general, f"m{n}") for n in range(5)]
    first = await poll(bot, limit=2)
    assert [e["id"] for e in first] == [2, 3]
    assert [e["body"]["message"]["content"] for e in first] == ["m0", "m1"]
    entry = first[0]
    assert entry["type"] == "message.created"
    assert entry["body"] == {"channel_id": general, "message": posted[0]}
    assert entry["attempts"] == 1 and entry["fetched_at"] is None
    lease_end = dt.datetime.fromisoformat(entry["lease_expires_at"])
    created = dt.datetime.fromisoformat(entry["created_at"])
    assert dt.datetime.fromisoformat(entry["expires_at"]) - created == dt.timedelta(hours=24)
    assert lease_end > dt.datetime.now(dt.UTC)
    # Leased entries are not handed out again while the lease runs.
    assert [e["id"] for e in await poll(bot, limit=10)] == [4, 5, 6]
    assert await poll(bot) == []


async def test_a_bot_in_websocket_mode_and_a_user_have_no_inbox_entries(
    client: TestClient, people: People
) -> None:
    owner = await people.create("olive")
    general, _ = await channel_with_bot(owner)
    listener = await make_bot(owner, "listener", "websocket")
    await owner.post(f"/api/channels/{general}/members", json={"user_id": listener.user_id})
    await post(owner, general, "hello")
    assert await poll(listener) == []
    for response in (await owner.get("/api/inbox"), await ack(owner, 1)):
        assert response.status == 403
        assert (await response.json())["error"]["code"] == "bot_only"


def _clocked(
    client: TestClient, start: dt.datetime
) -> tuple[InboxService, Callable[[float], None]]:
    now = [start]

    def advance(seconds: float) -> None:
        now[0] += dt.timedelta(seconds=seconds)

    service = InboxService(client.app[POOL], InboxWaiters(), LEASE, clock=lambda: now[0])
    return service, advance


async def _identity(client: TestClient, bot: Person) -> Identity:
    async with client.app[POOL].acquire() as conn:
        user = await users.select_user(conn, bot.user_id)
    assert user is not None
    return Identity(user, "token", token_workspace_id=bot.workspace_id)


async def test_an_unacknowledged_entry_comes_back_after_its_lease_and_never_after_ack(
    client: TestClient, people: People
) -> None:
    owner = await people.create("olive")
    general, bot = await channel_with_bot(owner)
    await post(owner, general, "work item")
    service, advance = _clocked(client, dt.datetime.now(dt.UTC))
    me = await _identity(client, bot)
    (taken,) = await service.poll(me, 10, 0)
    # The poller dies here, between fetch and acknowledge.
    advance(LEASE - 1)
    assert await service.poll(me, 10, 0) == []
    advance(1)
    (again,) = await service.poll(me, 10, 0)
    assert (again.id, again.attempts) == (taken.id, 2)
    assert await service.ack(me, [again.id]) == [again.id]
    assert await service.ack(me, [again.id]) == [again.id]  # twice is fine
    advance(LEASE * 10)
    assert await service.poll(me, 10, 0) == []
    assert await fetch(client, "SELECT acked_at IS NOT NULL FROM inbox_entries WHERE id = 2")


async def test_an_expired_entry_is_never_returned_and_its_ack_is_404(
    client: TestClient, people: People
) -> None:
    owner = await people.create("olive")
    general, bot = await channel_with_bot(owner)
    await post(owner, general, "too late")
    service, advance = _clocked(client, dt.datetime.now(dt.UTC))
    me = await _identity(client, bot)
    advance(24 * 3600 + 1)
    assert await service.poll(me, 10, 0) == []
    with pytest.raises(NotFound) as refused:
        await service.ack(me, [2])
    assert refused.value.code == "entry_not_found"
    assert await fetch(client, "SELECT acked_at FROM inbox_entries WHERE id = 2") is None


async def test_concurrent_polls_never_hold_one_entry_at_once(
    client: TestClient, people: People
) -> None:
    owner = await people.create("olive")
    general, bot = await channel_with_bot(owner)
    for n in range(12):
        await post(owner, general, f"m{n}")
    batches = await asyncio.gather(*(poll(bot, limit=3) for _ in range(6)))
    ids = [e["id"] for batch in batches for e in batch]
    assert len(ids) == len(set(ids))
    rest = await poll(bot, limit=100)
    assert sorted(ids + [e["id"] for e in rest]) == list(range(2, 14))


async def test_acknowledging_is_all_or_nothing(client: TestClient, people: People) -> None:
    owner = await people.create("olive")
    general, bot = await channel_with_bot(owner)
    other_channel, other_bot = await channel_with_bot(owner, name="random")
    await post(owner, general, "one")
    await post(owner, general, "two")
    await post(owner, other_channel, "theirs")
    assert [e["id"] for e in await poll(other_bot)] == [2]
    mine = [e["id"] for e in await poll(bot)]
    assert mine == [2, 3]
    unknown = await ack(bot, 2, 99)
    assert unknown.status == 404
    body = await unknown.json()
    assert body["error"]["code"] == "entry_not_found"
    assert body["error"]["details"] == {"ids": [99]}
    acked = "SELECT count(*) FROM inbox_entries WHERE acked_at IS NOT NULL AND id > 1"
    assert await fetch(client, acked) == 0  # entry 2 was not acknowledged either
    ok = await ack(bot, 2, 3, 3)
    assert ok.status == 200
    assert await ok.json() == {"acked": [2, 3]}
    assert (await ack(bot, 3, 2)).status == 200
    # The other bot's entry 2 is its own: still unacknowledged.
    other = "SELECT acked_at FROM inbox_entries WHERE bot_id = $1 AND id = 2"
    assert await fetch(client, other, other_bot.user_id) is None


@pytest.mark.parametrize(
    ("method", "path", "kw"),
    [
        ("GET", "/api/inbox?limit=0", {}),
        ("GET", "/api/inbox?limit=101", {}),
        ("GET", "/api/inbox?wait=31", {}),
        ("GET", "/api/inbox?wait=-1", {}),
        ("POST", "/api/inbox/ack", {"json": {"ids": []}}),
        ("POST", "/api/inbox/ack", {"json": {"ids": [0]}}),
        ("POST", "/api/inbox/ack", {"json": {"ids": ["1"]}}),
        ("POST", "/api/inbox/ack", {"json": {"ids": list(range(1, 102))}}),
    ],
)
async def test_invalid_polls_and_acks_are_422(
    client: TestClient, people: People, method: str, path: str, kw: dict[str, Any]
) -> None:
    owner = await people.create("olive")
    bot = await make_bot(owner, "helper")
    response = await bot.request(method, path, **kw)
    assert response.status == 422
    assert (await response.json())["error"]["code"] == "invalid_request"


async def test_a_long_poll_is_woken_by_the_commit(client: TestClient, people: People) -> None:
    owner = await people.create("olive")
    general, bot = await channel_with_bot(owner)
    waiting = asyncio.create_task(poll(bot, wait=25))
    await asyncio.sleep(0.2)  # let it reach its wait (it would also find the entry without)
    await post(owner, general, "wake up")
    (entry,) = await waiting
    assert entry["body"]["message"]["content"] == "wake up"


async def test_a_long_poll_with_nothing_to_return_answers_empty(
    client: TestClient, people: People
) -> None:
    owner = await people.create("olive")
    bot = await make_bot(owner, "helper")
    assert await poll(bot, wait=1) == []


async def test_a_long_poll_is_woken_by_a_commit_in_another_process(
    config: Config,
    client: TestClient,
    people: People,
    aiohttp_client: Callable[..., Awaitable[TestClient]],
) -> None:
    """Two applications on one database, as two server processes: the write in one, the
    poll in the other, the wake-up through PostgreSQL NOTIFY."""
    assert config.fanout == "postgres"
    other = await aiohttp_client(create_app(config))
    owner = await people.create("olive")
    general, bot = await channel_with_bot(owner)
    elsewhere = Person(other, bot.user_id, bot.username, bot.workspace_id, bot.token)
    waiting = asyncio.create_task(poll(elsewhere, wait=25))
    await asyncio.sleep(0.2)
    await post(owner, general, "from the first process")
    (entry,) = await waiting
    assert entry["body"]["message"]["content"] == "from the first process"


async def test_another_workspace_and_another_bot_never_see_my_entries(
    client: TestClient, people: People
) -> None:
    owner = await people.create("olive")
    general, bot = await channel_with_bot(owner)
    stranger_owner = await people.create("sam", workspace="elsewhere")
    _, stranger = await channel_with_bot(stranger_owner, name="theirs")
    await post(owner, general, "acme only")
    assert await poll(stranger) == []
    assert (await ack(stranger, 2)).status == 404
    assert [e["body"]["message"]["content"] for e in await poll(bot)] == ["acme only"]


async def test_a_bots_download_stamps_its_entries_fetched_the_first_time(
    client: TestClient, people: People
) -> None:
    owner = await people.create("olive")
    general, bot = await channel_with_bot(owner, private=True)
    form = aiohttp.FormData(default_to_multipart=True)
    form.add_field("content", "the file")
    form.add_field("file", io.BytesIO(b"payload bytes"), filename="data.bin")
    sent = await owner.post(f"/api/channels/{general}/messages", data=form)
    (attachment,) = (await sent.json())["attachments"]
    stamp = "SELECT fetched_at FROM inbox_entries WHERE bot_id = $1 AND id = 2"
    # The sender's download, and the bot's HEAD, fetch nothing for the bot.
    assert (await owner.get(attachment["url"])).status == 200
    assert (await bot.request("HEAD", attachment["url"])).status == 200
    assert await fetch(client, stamp, bot.user_id) is None
    got = await bot.get(attachment["url"], headers={"Range": "bytes=0-6"})
    assert (got.status, await got.read()) == (206, b"payload")
    first = await fetch(client, stamp, bot.user_id)
    assert first is not None
    assert (await bot.get(attachment["url"])).status == 200
    assert await fetch(client, stamp, bot.user_id) == first
    (entry,) = await poll(bot)
    assert dt.datetime.fromisoformat(entry["fetched_at"]) == first
    # Removed from the (private) channel, the bot can no longer fetch its files.
    removed = await owner.delete(f"/api/channels/{general}/members/{bot.user_id}")
    assert removed.status == 204
    assert (await bot.get(attachment["url"])).status == 404


async def test_an_expired_entry_is_not_stamped(client: TestClient, people: People) -> None:
    owner = await people.create("olive")
    general, bot = await channel_with_bot(owner)
    form = aiohttp.FormData(default_to_multipart=True)
    form.add_field("file", io.BytesIO(b"late"), filename="late.txt")
    sent = await owner.post(f"/api/channels/{general}/messages", data=form)
    (attachment,) = (await sent.json())["attachments"]
    async with client.app[POOL].acquire() as conn:
        await conn.execute(
            "UPDATE inbox_entries SET created_at = now() - interval '2 days',"
            " expires_at = now() - interval '1 day' WHERE id = 2"
        )
    assert (await bot.get(attachment["url"])).status == 200
    stamp = "SELECT fetched_at FROM inbox_entries WHERE id = 2"
    assert await fetch(client, stamp) is None


async def test_an_acknowledged_entry_can_be_read_again_until_it_is_swept(
    client: TestClient, people: People
) -> None:
    owner = await people.create("olive")
    general, bot = await channel_with_bot(owner)
    other = await make_bot(owner, "other-bot", "poll")
    await post(owner, general, "read me twice")
    (entry,) = await poll(bot)
    assert (await ack(bot, entry["id"])).status == 200
    again = await bot.get(f"/api/inbox/entries/{entry['id']}")
    body = await again.json()
    assert again.status == 200, body
    assert body["body"] == entry["body"] and body["acked_at"] is not None
    assert await poll(bot) == []  # reading it leased nothing and returned nothing to polls
    theirs = await other.get(f"/api/inbox/entries/{entry['id']}")
    missing = await bot.get("/api/inbox/entries/999")
    assert (theirs.status, await theirs.json()) == (missing.status, await missing.json())
    assert missing.status == 404
    assert (await owner.get(f"/api/inbox/entries/{entry['id']}")).status == 403
    # Swept once the retention after its acknowledgement is over.
    acked = dt.datetime.fromisoformat(body["acked_at"])
    swept = await sweep_once(client.app[POOL], acked + dt.timedelta(hours=1, seconds=1))
    assert swept.acknowledged == 2  # the channel's join (acked by channel_with_bot) and it
    assert (await bot.get(f"/api/inbox/entries/{entry['id']}")).status == 404


async def test_a_bot_removed_from_a_public_channel_can_no_longer_fetch_its_files(
    client: TestClient, people: People
) -> None:
    owner = await people.create("olive")
    outsider = await people.create("otto")  # a person in the workspace, not in the channel
    general, bot = await channel_with_bot(owner)  # public
    form = aiohttp.FormData(default_to_multipart=True)
    form.add_field("file", io.BytesIO(b"minutes"), filename="minutes.txt")
    sent = await owner.post(f"/api/channels/{general}/messages", data=form)
    (attachment,) = (await sent.json())["attachments"]
    (entry,) = await poll(bot)
    assert (await bot.get(attachment["url"])).status == 200
    removed = await owner.delete(f"/api/channels/{general}/members/{bot.user_id}")
    assert removed.status == 204
    await post(owner, general, "after the removal")
    gone = await bot.get(attachment["url"])
    missing = await bot.get(attachment["url"].replace(attachment["id"], "x" * 22))
    assert (gone.status, await gone.read()) == (missing.status, await missing.read())
    assert gone.status == 404
    assert (await bot.get(f"/api/thumbnails/{attachment['id']}")).status == 404
    # Its entry is still there to acknowledge; nothing new came from the channel.
    assert (await ack(bot, entry["id"])).status == 200
    assert [e["type"] for e in await poll(bot)] == ["channel.member_removed"]
    # People read a public channel's files without joining it, as before.
    assert (await outsider.get(attachment["url"])).status == 200
