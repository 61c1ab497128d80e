"""Push delivery: each push-mode bot's entries POSTed to its callback URL in order, signed per
Standard Webhooks (checked here by the independent ``standardwebhooks`` package in a real
receiver on 127.0.0.1), retried on the schedule, honouring Retry-After, disabled by 410,
refused for non-public addresses unless allowed; the signing secret rotates with an overlap."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import ipaddress
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from support.bots import make_bot
from support.chat import fetch, make_channel, post
from support.people import People, Person
from support.receiver import Hit, Receiver

from echora_server.agents.outbound import refused, retry_after_seconds
from echora_server.agents.push import PUSH
from echora_server.agents.webhooks import new_webhook_secret
from echora_server.app import create_app
from echora_server.config import Config
from echora_server.db.pool import POOL


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


def fast_retries(client: TestClient, *delays: float) -> None:
    client.app[PUSH].retry_delays = delays


async def test_a_failed_push_is_retried_and_the_next_entry_waits_for_it(
    client: TestClient, people: People, receiver: Receiver
) -> None:
    fast_retries(client, 0.3)
    receiver.answer = lambda hit: web.Response(status=500 if hit.attempt == 1 else 200)
    owner = await people.create("olive")
    bot, secret = await push_bot(owner, receiver)
    general = await join(owner, bot)
    await post(owner, general, "first")
    hits = await receiver.wait_for(4)
    assert [(h.entry_id, h.attempt) for h in hits] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert hits[0].id == hits[1].id  # stable across retries
    assert hits[1].at - hits[0].at >= 0.3
    assert verified(secret, hits[1]) == verified(secret, hits[0])
    await settled(client, "SELECT count(*) FROM inbox_entries WHERE acked_at IS NULL", 0)
    view = await (await owner.get(f"/api/bots/{bot.user_id}")).json()
    assert view["last_delivery_error"] == "http_500" and view["last_delivery_error_at"]
    assert await fetch(client, "SELECT array_agg(attempts ORDER BY id) FROM inbox_entries") == [
        2,
        2,
    ]


async def test_the_schedule_runs_until_the_entry_expires(client: TestClient) -> None:
    dispatcher = client.app[PUSH]
    assert dispatcher.retry_delays == (5, 300, 1800, 7200, 18000, 36000)
    assert [dispatcher.retry_delay(n) for n in range(1, 9)] == [
        5, 300, 1800, 7200, 18000, 36000, 36000, 36000,
    ]  # fmt: skip


@pytest.mark.parametrize("status", [429, 503])
async def test_retry_after_is_honoured_when_later_than_the_schedule(
    client: TestClient, people: People, receiver: Receiver, status: int
) -> None:
    fast_retries(client, 0.1)

    def answer(hit: Hit) -> web.Response:
        if hit.attempt == 1:
            return web.Response(status=status, headers={"Retry-After": "2"})
        return web.Response(status=204)

    receiver.answer = answer
    owner = await people.create("olive")
    bot, _ = await push_bot(owner, receiver)
    await join(owner, bot)
    first, second = await receiver.wait_for(2)
    assert first.id == second.id and second.attempt == 2
    assert second.at - first.at >= 1.9
    assert (await (await owner.get(f"/api/bots/{bot.user_id}")).json())[
        "last_delivery_error"
    ] == f"http_{status}"


def test_retry_after_takes_seconds_or_an_http_date() -> None:
    now = dt.datetime(2026, 11, 5, 12, 0, 0, tzinfo=dt.UTC)
    assert retry_after_seconds("120", now) == 120
    assert retry_after_seconds("Thu, 05 Nov 2026 12:10:00 GMT", now) == 600
    assert retry_after_seconds("Thu, 05 Nov 2026 11:00:00 GMT", now) == 0
    assert retry_after_seconds("soon", now) is None
    assert retry_after_seconds(None, now) is None


async def test_410_disables_the_callback_until_the_delivery_is_set_again(
    client: TestClient, people: People, receiver: Receiver
) -> None:
    fast_retries(client, 0.1)
    receiver.answer = lambda hit: web.Response(status=410)
    owner = await people.create("olive")
    bot, secret = await push_bot(owner, receiver)
    general = await join(owner, bot)
    (gone,) = await receiver.wait_for(1)
    await settled(client, "SELECT callback_disabled_at IS NOT NULL FROM bots", True)
    await post(owner, general, "while disabled")
    await asyncio.sleep(1)
    assert receiver.hits == [gone]  # nothing more is pushed
    view = await (await owner.get(f"/api/bots/{bot.user_id}")).json()
    assert view["callback_disabled_at"] and view["last_delivery_error"] == "http_410"
    assert view["backlog"] == 2
    receiver.answer = lambda hit: web.Response(status=200)
    patched = await owner.request(
        "PATCH", f"/api/bots/{bot.user_id}", json={"delivery": "push", "callback_url": receiver.url}
    )
    assert (await patched.json())["callback_disabled_at"] is None
    hits = await receiver.wait_for(3)
    assert [(h.entry_id, h.attempt) for h in hits[1:]] == [(1, 2), (2, 1)]
    assert verified(secret, hits[2])["data"]["message"]["content"] == "while disabled"
    await settled(client, "SELECT count(*) FROM inbox_entries WHERE acked_at IS NULL", 0)


async def test_redirects_are_not_followed(
    client: TestClient, people: People, receiver: Receiver
) -> None:
    fast_retries(client, 30)
    receiver.answer = lambda hit: web.Response(status=307, headers={"Location": receiver.url})
    owner = await people.create("olive")
    bot, _ = await push_bot(owner, receiver)
    await join(owner, bot)
    await receiver.wait_for(1)
    await settled(client, "SELECT last_delivery_error FROM bots", "redirect_refused")
    await asyncio.sleep(0.5)
    assert len(receiver.hits) == 1


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_non_public_addresses_are_refused_unless_allowed(
    config: Config,
    aiohttp_client: Callable[..., Awaitable[TestClient]],
    receiver: Receiver,
    host: str,
) -> None:
    strict = await aiohttp_client(
        create_app(config.model_copy(update={"webhook_allow_private": False}))
    )
    owner = await People(strict).create("olive")
    url = receiver.url.replace("127.0.0.1", host)
    bot, _ = await push_bot(owner, Receiver.at(url))
    await join(owner, bot)
    await settled(strict, "SELECT last_delivery_error FROM bots", "address_refused")
    assert receiver.hits == []
    entry = await fetch(
        strict,
        "SELECT (attempts, acked_at IS NULL, next_attempt_at - now() > interval '3 s') "
        "FROM inbox_entries",
    )
    assert tuple(entry) == (1, True, True)  # a failed attempt, retried on the schedule
    metrics = await (await strict.get("/metrics")).text()
    assert 'echora_push_attempts_total{outcome="refused"} 1.0' in metrics


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1",
     "0.0.0.0", "224.0.0.1", "240.0.0.1", "255.255.255.255", "::1", "fe80::1", "fc00::1",
     "::ffff:127.0.0.1", "::", "ff02::1"],
)  # fmt: skip
def test_refused_addresses(address: str) -> None:
    assert refused(ipaddress.ip_address(address))


def test_public_addresses_are_not_refused() -> None:
    for address in ("93.184.215.14", "8.8.8.8", "2606:4700:4700::1111"):
        assert not refused(ipaddress.ip_address(address))


async def test_during_the_overlap_both_secrets_sign(
    client: TestClient, people: People, receiver: Receiver
) -> None:
    owner = await people.create("olive")
    bot, old = await push_bot(owner, receiver)
    rotated = await (await owner.post(f"/api/bots/{bot.user_id}/secret")).json()
    new = rotated["webhook_secret"]
    general = await join(owner, bot)
    (hit,) = await receiver.wait_for(1)
    signatures = hit.headers["webhook-signature"].split(" ")
    assert len(signatures) == 2 and all(s.startswith("v1,") for s in signatures)
    for key, signature in ((new, signatures[0]), (old, signatures[1])):
        alone = Hit({**hit.headers, "webhook-signature": signature}, hit.body, hit.at)
        assert verified(key, alone)["type"] == "channel.member_added"
    with pytest.raises(WebhookVerificationError):
        verified(old, Hit({**hit.headers, "webhook-signature": signatures[0]}, hit.body, hit.at))
    # Once the overlap is over, only the new secret signs.
    async with client.app[POOL].acquire() as conn:
        await conn.execute("UPDATE bots SET previous_secret_until = now() - interval '1 s'")
    await post(owner, general, "after")
    second = (await receiver.wait_for(2))[1]
    assert " " not in second.headers["webhook-signature"]
    assert verified(new, second)["data"]["message"]["content"] == "after"
    with pytest.raises(WebhookVerificationError):
        verified(old, second)
