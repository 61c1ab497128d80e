"""Push delivery: each push-mode bot's entries POSTed to its callback URL in order, signed per
Standard Webhooks (checked here by the independent ``standardwebhooks`` package in a real
receiver on 127.0.0.1), retried on the schedule, honouring Retry-After, disabled by 410,
refused for non-public addresses unless allowed; the signing secret rotates with an overlap."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from support.bots import make_bot
from support.chat import fetch, make_channel, post
from support.people import People, Person
from support.receiver import Hit, Receiver

from echora_server.agents.webhooks import new_webhook_secret


async def test_a_push_bot_gets_a_signing_secret_shown_once(
    client: TestClient, people: People
) -> None:
    owner = await people.create("olive")
    path = f"/api/workspaces/{owner.workspace_id}/bots"
    response = await owner.post(
        path,
        json={"username": "pusher", "delivery": "push", "callback_url": "https://a.example/h"},
    )
    assert response.status == 201
    created = await response.json()
    secret = created["webhook_secret"]
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) >= 24
    bot_id = created["bot"]["id"]
    stored = await fetch(client, "SELECT webhook_secret FROM bots WHERE user_id = $1", bot_id)
    assert stored == secret  # kept to sign: an HMAC key cannot be stored hashed
    listed = await (await owner.get(path)).text()
    one = await (await owner.get(f"/api/bots/{created['bot']['id']}")).text()
    assert secret[6:] not in listed and secret[6:] not in one
    # Poll and websocket bots get none, until push is first set; then once only.
    poller = await (await owner.post(path, json={"username": "poller", "delivery": "poll"})).json()
    assert poller["webhook_secret"] is None
    bot_path = f"/api/bots/{poller['bot']['id']}"
    push = {"delivery": "push", "callback_url": "https://a.example/h"}
    first = await (await owner.request("PATCH", bot_path, json=push)).json()
    assert first["webhook_secret"].startswith("whsec_")
    again = await (await owner.request("PATCH", bot_path, json=push)).json()
    assert again["webhook_secret"] is None
    assert {k: v for k, v in again.items() if k != "webhook_secret"} == await (
        await owner.get(bot_path)
    ).json()


async def test_admins_rotate_the_secret_and_the_previous_one_overlaps(
    client: TestClient, people: People
) -> None:
    owner = await people.create("olive")
    member = await people.create("mia")
    stranger = await people.create("sam", workspace="elsewhere")
    bot = await make_bot(owner, "pusher", "push", callback_url="https://a.example/h")
    path = f"/api/bots/{bot.user_id}/secret"
    before = await fetch(client, "SELECT webhook_secret FROM bots")
    assert (await member.post(path)).status == 403
    assert (await stranger.post(path)).status == 404
    assert await fetch(client, "SELECT webhook_secret FROM bots") == before
    started = dt.datetime.now(dt.UTC)
    rotated = await (await owner.post(path)).json()
    assert rotated["webhook_secret"].startswith("whsec_") and rotated["webhook_secret"] != before
    until = dt.datetime.fromisoformat(rotated["previous_secret_valid_until"])
    assert dt.timedelta(hours=23, minutes=59) < until - started < dt.timedelta(hours=24, minutes=1)
    assert await fetch(client, "SELECT previous_webhook_secret FROM bots") == before
    assert await fetch(client, "SELECT webhook_secret FROM bots") == rotated["webhook_secret"]


@pytest.fixture
def config_overrides() -> dict[str, Any]:
    return {"webhook_allow_private": True, "webhook_timeout": 2.0}


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver().running() as running:
        yield running


async def push_bot(owner: Person, receiver: Receiver, name: str = "pusher") -> tuple[Person, str]:
    """A push bot for ``receiver``, and its signing secret."""
    response = await owner.post(
        f"/api/workspaces/{owner.workspace_id}/bots",
        json={"username": name, "delivery": "push", "callback_url": receiver.url},
    )
    assert response.status == 201, await response.text()
    created = await response.json()
    bot = Person(owner.client, created["bot"]["id"], name, owner.workspace_id, created["token"])
    return bot, created["webhook_secret"]


async def join(owner: Person, bot: Person, name: str = "general") -> int:
    channel_id: int = (await make_channel(owner, name))["id"]
    added = await owner.post(f"/api/channels/{channel_id}/members", json={"user_id": bot.user_id})
    assert added.status == 201
    return channel_id


def verified(secret: str, hit: Hit) -> Any:
    """The payload, as the independent implementation checks it (raises if it does not)."""
    return Webhook(secret).verify(hit.body, hit.headers)


async def test_entries_are_pushed_signed_in_order_and_acknowledged(
    client: TestClient, people: People, receiver: Receiver
) -> None:
    owner = await people.create("olive")
    bot, secret = await push_bot(owner, receiver)
    general = await join(owner, bot)
    posted = [await post(owner, general, f"m{n}") for n in range(10)]
    hits = await receiver.wait_for(11)
    assert [hit.id for hit in hits] == [f"ent_{bot.user_id}_{n}" for n in range(1, 12)]
    assert all(hit.attempt == 1 for hit in hits)
    first = verified(secret, hits[0])
    assert first["type"] == "channel.member_added"
    payloads = [verified(secret, hit) for hit in hits[1:]]
    assert [p["type"] for p in payloads] == ["message.created"] * 10
    assert [p["data"] for p in payloads] == [{"channel_id": general, "message": m} for m in posted]
    created = await fetch(client, "SELECT created_at FROM inbox_entries WHERE id = 2")
    assert dt.datetime.fromisoformat(payloads[0]["timestamp"]) == created
    assert abs(int(hits[0].headers["webhook-timestamp"]) - time.time()) < 60
    # The check can fail: another body, another id or another secret is refused.
    tampered = Hit(hits[1].headers, hits[1].body.replace(b"m0", b"m9"), hits[1].at)
    other_id = Hit({**hits[1].headers, "webhook-id": hits[2].id}, hits[1].body, hits[1].at)
    for bad, key in ((tampered, secret), (other_id, secret), (hits[1], new_webhook_secret())):
        with pytest.raises(WebhookVerificationError):
            verified(key, bad)
    await settled(client, "SELECT count(*) FROM inbox_entries WHERE acked_at IS NULL", 0)
    view = await (await owner.get(f"/api/bots/{bot.user_id}")).json()
    assert view["backlog"] == 0 and view["last_delivered_at"] is not None
    assert view["last_delivery_error"] is None and view["callback_disabled_at"] is None
    assert await fetch(client, "SELECT max(attempts) FROM inbox_entries") == 1


async def settled(client: TestClient, sql: str, expected: Any, timeout: float = 10) -> None:
    """Until ``sql``'s value is ``expected`` (the dispatcher settles after the answer)."""
    async with asyncio.timeout(timeout):
        while (value := await fetch(client, sql)) != expected:
            await asyncio.sleep(0.05)
    assert value == expected
