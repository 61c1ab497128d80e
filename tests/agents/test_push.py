"""Push delivery: each push-mode bot's entries POSTed to its callback URL in order, signed per
Standard Webhooks (checked here by the independent ``standardwebhooks`` package in a real
receiver on 127.0.0.1), retried on the schedule, honouring Retry-After, disabled by 410,
refused for non-public addresses unless allowed; the signing secret rotates with an overlap."""

from __future__ import annotations

import base64
import datetime as dt

from aiohttp.test_utils import TestClient
from support.bots import make_bot
from support.chat import fetch
from support.people import People


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
