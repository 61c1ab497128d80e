"""Fan-out backends: PostgreSQL LISTEN/NOTIFY across processes, and the in-memory one."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from support.processes import echora_env, free_port, start_echora, stop

from echora_server.accounts import service as accounts
from echora_server.config import Config
from echora_server.db.pool import create_pool
from echora_server.realtime.events import Event
from echora_server.realtime.fanout.memory import MemoryFanout
from echora_server.realtime.fanout.postgres import PostgresFanout


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.arrived = asyncio.Event()

    async def __call__(self, event: Event) -> None:
        self.events.append(event)
        self.arrived.set()

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Event]:
        async with asyncio.timeout(timeout):
            while len(self.events) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.events


async def test_postgres_fanout_reaches_every_listener_including_large_events(
    database_url: str,
) -> None:
    config = Config(database_url=database_url)
    pool = await create_pool(config, database_url)
    first, second = PostgresFanout(pool, database_url), PostgresFanout(pool, database_url)
    seen_first, seen_second = Recorder(), Recorder()
    await first.start(seen_first)
    await second.start(seen_second)
    try:
        big = {"channel_id": 1, "message": {"content": "x" * 20_000}}  # beyond NOTIFY's 8000 bytes
        events = [Event("message.created", 1, 1, {"n": i}) for i in range(20)]
        events.append(Event("message.created", 1, 1, big))
        for event in events:
            await first.publish(event)
        assert await seen_first.wait_for(len(events)) == events
        assert await seen_second.wait_for(len(events)) == events
    finally:
        await first.close()
        await second.close()
        await pool.close()


async def test_postgres_fanout_listener_recovers_from_a_lost_connection(database_url: str) -> None:
    config = Config(database_url=database_url)
    pool = await create_pool(config, database_url)
    fanout = PostgresFanout(pool, database_url)
    seen = Recorder()
    await fanout.start(seen)
    try:
        await fanout.publish(Event("x", 1, 1, {"n": 0}))
        await seen.wait_for(1)
        async with pool.acquire() as conn:
            killed = await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE query LIKE 'LISTEN%' AND pid <> pg_backend_pid()"
            )
        assert killed == 1
        deadline = time.monotonic() + 10
        while len(seen.events) < 2 and time.monotonic() < deadline:
            await fanout.publish(Event("x", 1, 1, {"n": 1}))  # retried until listened again
            await asyncio.sleep(0.3)
        assert len(seen.events) >= 2 and seen.events[1].data == {"n": 1}
    finally:
        await fanout.close()
        await pool.close()


async def test_memory_fanout_delivers_in_order() -> None:
    fanout = MemoryFanout()
    seen = Recorder()
    await fanout.start(seen)
    events = [Event("x", 1, 1, {"n": i}) for i in range(5)]
    for event in events:
        await fanout.publish(event)
    assert seen.events == events
    await fanout.close()


# --- two real server processes on one database --------------------------------------


def start_server(database_url: str, data_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = echora_env(
        ECHORA_DATABASE_URL=database_url,
        ECHORA_DATA_DIR=str(data_dir),
        ECHORA_LISTEN=f"127.0.0.1:{port}",
        ECHORA_FANOUT="postgres",
        ECHORA_LOG_LEVEL="warning",
    )
    process = start_echora(
        "serve",
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return process, f"http://127.0.0.1:{port}"


async def wait_ready(session: aiohttp.ClientSession, url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            async with session.get(f"{url}/readyz") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.2)
    raise AssertionError(f"{url} never became ready")


@pytest.fixture
def two_servers(database_url: str, tmp_path: Path) -> Iterator[tuple[str, str]]:
    servers = [start_server(database_url, tmp_path / name) for name in ("a", "b")]
    try:
        yield servers[0][1], servers[1][1]
    finally:
        for process, _ in servers:
            stop(process)


async def test_message_posted_on_one_process_reaches_a_socket_on_the_other(
    database_url: str, two_servers: tuple[str, str]
) -> None:
    url_a, url_b = two_servers
    conn = await asyncpg.connect(database_url)
    try:
        alice, ws_ = await accounts.create_user(
            conn, workspace_slug="acme", username="alice", password=None
        )
        bob, _ = await accounts.create_user(
            conn, workspace_slug="acme", username="bob", password=None
        )
        _, alice_token = await accounts.issue_api_token(conn, alice.id, "t")
        _, bob_token = await accounts.issue_api_token(conn, bob.id, "t")
    finally:
        await conn.close()
    as_alice = {"Authorization": f"Bearer {alice_token}"}
    as_bob = {"Authorization": f"Bearer {bob_token}"}
    async with aiohttp.ClientSession() as session:
        await wait_ready(session, url_a)
        await wait_ready(session, url_b)
        async with session.post(
            f"{url_a}/api/channels",
            headers=as_alice,
            json={"workspace_id": ws_.id, "name": "general", "private": False},
        ) as response:
            assert response.status == 201, await response.text()
            channel = await response.json()
        async with session.post(f"{url_b}/api/channels/{channel['id']}/join", headers=as_bob) as r:
            assert r.status in (200, 204), await r.text()
        async with session.ws_connect(f"{url_b}/api/ws", headers=as_bob) as ws:
            hello = await ws.receive_json(timeout=10)
            assert hello["type"] == "hello" and channel["id"] in hello["channel_ids"]
            async with session.post(
                f"{url_a}/api/channels/{channel['id']}/messages",
                headers=as_alice,
                json={"content": "hello from A", "client_id": "c1"},
            ) as response:
                assert response.status == 201, await response.text()
                posted = await response.json()
            # The channel's creation and bob's own join may still be on their way through the
            # fan-out (a public channel's creation reaches the whole workspace): skip them.
            earlier = ("channel.created", "channel.member_added")
            while (frame := await ws.receive_json(timeout=10))["type"] in earlier:
                pass
            assert frame["type"] == "message.created"
            assert frame["message"]["id"] == posted["id"]
            assert frame["message"]["content"] == "hello from A"
            assert json.dumps(frame["message"], sort_keys=True) == json.dumps(
                posted, sort_keys=True
            )


async def test_an_ephemeral_event_reaches_every_listener_and_is_stored_nowhere(
    database_url: str,
) -> None:
    config = Config(database_url=database_url)
    pool = await create_pool(config, database_url)
    first, second = PostgresFanout(pool, database_url), PostgresFanout(pool, database_url)
    seen_first, seen_second = Recorder(), Recorder()
    await first.start(seen_first)
    await second.start(seen_second)
    try:
        async with pool.acquire() as conn:
            stored = await conn.fetchval("SELECT count(*) FROM events")
        typing = Event("typing", 1, 7, {"channel_id": 7, "user_id": 3}, user_id=3)
        await first.publish_ephemeral(typing)
        assert await seen_first.wait_for(1) == [typing]
        assert await seen_second.wait_for(1) == [typing]
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM events") == stored
        with pytest.raises(ValueError, match="ephemeral"):
            await first.publish_ephemeral(Event("typing", 1, 7, {"x": "y" * 5000}))
    finally:
        await first.close()
        await second.close()
        await pool.close()
