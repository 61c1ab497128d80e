"""Each state an inbox entry goes through is one structured log line (workspace, bot, entry,
and its files' ids, sizes and names) and a Prometheus count; the sweep says what it removed."""

from __future__ import annotations

import datetime as dt
import io
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs
from support.bots import ack, make_bot, poll
from support.chat import make_channel
from support.people import People

from echora_server.agents.sweeper import sweep_once
from echora_server.db.pool import POOL


async def counts(client: TestClient) -> dict[str, float]:
    text = await (await client.get("/metrics")).text()
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "echora_inbox_transitions_total":
                found[sample.labels["transition"]] = sample.value
    return found


def lines(logs: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["event"] == event]


async def test_every_transition_is_logged_and_counted(client: TestClient, people: People) -> None:
    owner = await people.create("olive")
    bot = await make_bot(owner, "watcher", "poll")
    channel_id = (await make_channel(owner, "general"))["id"]
    with capture_logs() as logs:
        added = await owner.post(
            f"/api/channels/{channel_id}/members", json={"user_id": bot.user_id}
        )
        assert added.status == 201
        form = aiohttp.FormData(default_to_multipart=True)
        form.add_field("file", io.BytesIO(b"report body"), filename="q3-report.txt")
        sent = await owner.post(f"/api/channels/{channel_id}/messages", data=form)
        (attachment,) = (await sent.json())["attachments"]
        joined, carrying = await poll(bot)
        assert (await bot.get(attachment["url"])).status == 200
        assert (await bot.get(attachment["url"])).status == 200  # stamped once only
        assert (await ack(bot, carrying["id"])).status == 200
    staged = lines(logs, "inbox_staged")
    assert [(s["bot_id"], s["entry_id"], s["type"]) for s in staged] == [
        (bot.user_id, 1, "channel.member_added"),
        (bot.user_id, 2, "message.created"),
    ]
    assert staged[1]["workspace_id"] == owner.workspace_id
    assert staged[1]["files"] == [
        {"id": attachment["id"], "size": len(b"report body"), "name": "q3-report.txt"}
    ]
    assert [line["entry_id"] for line in lines(logs, "inbox_leased")] == [1, 2]
    (fetched,) = lines(logs, "inbox_fetched")
    assert (fetched["entry_id"], fetched["file_id"], fetched["size"], fetched["name"]) == (
        2,
        attachment["id"],
        11,
        "q3-report.txt",
    )
    (acked,) = lines(logs, "inbox_acknowledged")
    assert (acked["workspace_id"], acked["bot_id"], acked["entry_id"]) == (
        owner.workspace_id,
        bot.user_id,
        2,
    )
    assert await counts(client) == {"staged": 2, "leased": 2, "fetched": 1, "acknowledged": 1}

    async with client.app[POOL].acquire() as conn:
        expires = await conn.fetchval("SELECT max(expires_at) FROM inbox_entries")
    with capture_logs() as logs:
        result = await sweep_once(client.app[POOL], expires + dt.timedelta(seconds=1))
    assert result.counts() == {"acknowledged": 1, "expired_unfetched": 1, "expired_fetched": 0}
    (expired,) = lines(logs, "inbox_expired")
    assert (expired["entry_id"], expired["fetched"], expired["type"]) == (
        joined["id"],
        False,
        "channel.member_added",
    )
    (summary,) = lines(logs, "inbox_swept")
    assert summary["acknowledged"] == 1 and summary["expired_unfetched"] == 1
