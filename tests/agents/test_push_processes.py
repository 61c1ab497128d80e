"""Push across real ``echora serve`` processes on one database: per-bot order and nothing
lost across a restart, and two processes never sending one attempt twice."""

from __future__ import annotations

import asyncio
import collections
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from support.processes import echora_env, free_port, start_echora, stop
from support.receiver import Hit, Receiver

from echora_server.accounts import service as accounts


def wait_ready(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


class Servers:
    """``echora serve`` processes on one database, started and stopped by the test."""

    def __init__(self, database_url: str, data_dir: Path) -> None:
        self.database_url = database_url
        self.data_dir = data_dir
        self.running: list[subprocess.Popen[Any]] = []

    async def start(self) -> str:
        port = free_port()
        env = echora_env(
            ECHORA_DATABASE_URL=self.database_url,
            ECHORA_STORAGE="local",
            ECHORA_DATA_DIR=str(self.data_dir),
            ECHORA_LISTEN=f"127.0.0.1:{port}",
            ECHORA_SWEEP_INTERVAL="0",
            ECHORA_WEBHOOK_ALLOW_PRIVATE="true",
            ECHORA_WEBHOOK_TIMEOUT="2s",
            ECHORA_LOG_LEVEL="warning",
        )
        process = start_echora("serve", env=env)
        self.running.append(process)
        await asyncio.to_thread(wait_ready, port)
        return f"http://127.0.0.1:{port}"

    def stop_all(self) -> None:
        for process in self.running:
            stop(process)
        self.running.clear()


@pytest.fixture
def servers(database_url: str, tmp_path: Path) -> Iterator[Servers]:
    started = Servers(database_url, tmp_path)
    try:
        yield started
    finally:
        started.stop_all()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver().running() as running:
        yield running


@pytest.fixture
async def owner_token(database_url: str) -> str:
    conn = await asyncpg.connect(database_url)
    try:
        user, _ = await accounts.create_user(
            conn, workspace_slug="acme", username="olive", password=None, role="owner"
        )
        _, secret = await accounts.issue_api_token(conn, user.id, "test")
    finally:
        await conn.close()
    return secret


async def call(http: aiohttp.ClientSession, method: str, url: str, **kw: Any) -> Any:
    async with http.request(method, url, **kw) as response:
        assert response.status < 300, await response.text()
        return await response.json()


async def push_channel(http: aiohttp.ClientSession, base: str, callback_url: str) -> int:
    """A push bot in a new channel (its joining is entry 1); the channel's id."""
    created = await call(
        http,
        "POST",
        f"{base}/api/workspaces/1/bots",
        json={"username": "pusher", "delivery": "push", "callback_url": callback_url},
    )
    channel = await call(
        http, "POST", f"{base}/api/channels", json={"workspace_id": 1, "name": "general"}
    )
    await call(
        http,
        "POST",
        f"{base}/api/channels/{channel['id']}/members",
        json={"user_id": created["bot"]["id"]},
    )
    return int(channel["id"])


async def say(http: aiohttp.ClientSession, base: str, channel_id: int, content: str) -> None:
    await call(
        http, "POST", f"{base}/api/channels/{channel_id}/messages", json={"content": content}
    )


def in_order(hits: list[Hit]) -> bool:
    """No entry reached the receiver before the one ahead of it had been answered 2xx."""
    ids = [hit.entry_id for hit in hits]
    return ids == sorted(ids)


async def unacked(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM inbox_entries WHERE acked_at IS NULL"))
    finally:
        await conn.close()


async def test_order_and_nothing_lost_across_a_restart(
    servers: Servers, receiver: Receiver, owner_token: str, database_url: str
) -> None:
    receiver.answer = lambda hit: web.Response(status=500)  # the agent is down at first
    headers = {"Authorization": f"Bearer {owner_token}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        base = await servers.start()
        general = await push_channel(http, base, receiver.url)
        for n in range(4):
            await say(http, base, general, f"m{n}")
        (refused,) = await receiver.wait_for(1)
        assert (refused.entry_id, refused.attempt) == (1, 1)
        servers.stop_all()
        receiver.answer = lambda hit: web.Response(status=200)
        await servers.start()  # its first scan finds entry 1 due after 5 s
        hits = await receiver.wait_for(6, timeout=30)
    assert [(h.entry_id, h.attempt) for h in hits] == [
        (1, 1),
        (1, 2),
        (2, 1),
        (3, 1),
        (4, 1),
        (5, 1),
    ]
    assert [h.json()["data"]["message"]["content"] for h in hits[2:]] == ["m0", "m1", "m2", "m3"]
    assert in_order(hits)
    async with asyncio.timeout(10):
        while await unacked(database_url):
            await asyncio.sleep(0.1)


async def test_a_sender_killed_mid_attempt_leaves_the_entry_to_the_next_after_its_lease(
    servers: Servers, receiver: Receiver, owner_token: str, database_url: str
) -> None:
    async def answer(hit: Hit) -> web.Response:
        if hit.attempt == 1 and hit.entry_id == 1:
            await asyncio.sleep(1.5)  # the sender dies meanwhile
        return web.Response(status=204)

    receiver.answer = answer
    headers = {"Authorization": f"Bearer {owner_token}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        base = await servers.start()
        general = await push_channel(http, base, receiver.url)
        await say(http, base, general, "after")
        await receiver.wait_for(1)
        servers.running[0].kill()  # SIGKILL: no release of its claim
        servers.running[0].wait()
        servers.running.clear()
        killed_at = time.monotonic()
        await servers.start()
        hits = await receiver.wait_for(3, timeout=30)
    assert [(h.entry_id, h.attempt) for h in hits] == [(1, 1), (1, 2), (2, 1)]
    # Not before the claim's lease (timeout 2 s + 5 s from the claim) ran out.
    assert hits[1].at - hits[0].at >= 6.5 and hits[1].at > killed_at
    assert in_order(hits)


async def test_two_processes_send_each_attempt_once_and_in_order(
    servers: Servers, receiver: Receiver, owner_token: str, database_url: str
) -> None:
    # The second entry fails once: its retry falls due in both processes at once.
    receiver.answer = lambda hit: web.Response(
        status=500 if (hit.entry_id, hit.attempt) == (2, 1) else 204
    )
    headers = {"Authorization": f"Bearer {owner_token}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        a, b = await servers.start(), await servers.start()
        general = await push_channel(http, a, receiver.url)
        for n in range(20):
            await say(http, (a, b)[n % 2], general, f"m{n}")
        hits = await receiver.wait_for(22, timeout=30)
        await asyncio.sleep(1.5)  # room for a duplicate to show
    hits = list(receiver.hits)
    counts = collections.Counter((hit.id, hit.attempt) for hit in hits)
    assert len(hits) == 22 and set(counts.values()) == {1}, counts
    assert {hit.entry_id for hit in hits} == set(range(1, 22))
    assert counts[(hits[1].id, 2)] == 1 and hits[1].entry_id == 2
    assert in_order(hits)
    assert await unacked(database_url) == 0
