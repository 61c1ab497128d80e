"""Presence across two real ``echora serve`` processes on one database: a socket on one is
seen from the other, a reload onto the other process within the grace shows nothing, and a
process killed with SIGKILL takes its users offline once its lease has run out. Typing's
limit holds across them too."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from support.processes import echora_env, free_port, start_echora, stop

from echora_server.accounts import service as accounts

GRACE = 0.5
LEASE = 1.0
TIMEOUT = 15


def start_server(database_url: str, data_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = echora_env(
        ECHORA_DATABASE_URL=database_url,
        ECHORA_DATA_DIR=str(data_dir),
        ECHORA_LISTEN=f"127.0.0.1:{port}",
        ECHORA_SWEEP_INTERVAL="0",
        ECHORA_PRESENCE_GRACE=f"{GRACE}s",
        ECHORA_PRESENCE_LEASE=f"{LEASE}s",
        ECHORA_PRESENCE_INTERVAL="0",
        ECHORA_LOG_LEVEL="warning",
    )
    process = start_echora("serve", env=env, stdout=subprocess.DEVNULL)
    return process, f"http://127.0.0.1:{port}"


@pytest.fixture
def servers(
    database_url: str, tmp_path: Path
) -> Iterator[list[tuple[subprocess.Popen[bytes], str]]]:
    started = [start_server(database_url, tmp_path / name) for name in ("a", "b")]
    try:
        yield started
    finally:
        for process, _ in started:
            stop(process)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def wait_ready(http: aiohttp.ClientSession, url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            async with http.get(f"{url}/readyz") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError(f"{url} never became ready")


class User:
    def __init__(self, user_id: int, workspace_id: int, token: str) -> None:
        self.id = user_id
        self.workspace_id = workspace_id
        self.headers = {"Authorization": f"Bearer {token}"}


async def make_users(database_url: str, *names: str) -> list[User]:
    conn = await asyncpg.connect(database_url)
    try:
        made = []
        for name in names:
            user, workspace = await accounts.create_user(
                conn, workspace_slug="acme", username=name, password=None
            )
            _, token = await accounts.issue_api_token(conn, user.id, "t")
            made.append(User(user.id, workspace.id, token))
        return made
    finally:
        await conn.close()


async def connect(
    http: aiohttp.ClientSession, url: str, user: User, *, watch: bool = False
) -> aiohttp.ClientWebSocketResponse:
    ws = await http.ws_connect(
        f"{url}/api/ws{'?presence=1' if watch else ''}", headers=user.headers
    )
    hello = await ws.receive_json(timeout=TIMEOUT)
    assert hello["type"] == "hello"
    return ws


async def next_of(ws: aiohttp.ClientWebSocketResponse, prefix: str) -> dict[str, Any]:
    while True:
        frame = dict(await ws.receive_json(timeout=TIMEOUT))
        if frame["type"].startswith(prefix):
            return frame


async def expect_next(ws: aiohttp.ClientWebSocketResponse, user: User, status: str) -> float:
    """The next presence frame is this one; when it came."""
    frame = await next_of(ws, "presence.")
    assert frame == {"type": "presence.updated", "user_id": user.id, "status": status}
    return time.monotonic()


async def call(http: aiohttp.ClientSession, method: str, url: str, user: User, **kw: Any) -> Any:
    async with http.request(method, url, headers=user.headers, **kw) as response:
        assert response.status < 300, await response.text()
        return await response.json()


async def test_presence_across_processes_grace_and_a_killed_process(
    servers: list[tuple[subprocess.Popen[bytes], str]],
    http: aiohttp.ClientSession,
    database_url: str,
) -> None:
    (process_a, a), (_, b) = servers
    alice, bob, carol = await make_users(database_url, "alice", "bob", "carol")
    await wait_ready(http, a)
    await wait_ready(http, b)

    observer = await connect(http, b, bob, watch=True)
    await expect_next(observer, bob, "online")
    on_a = await connect(http, a, alice)
    await expect_next(observer, alice, "online")  # a socket on A, seen from B

    # Typing's limit holds across processes: one frame, the second within 2 s dropped.
    channel = await call(
        http,
        "POST",
        f"{a}/api/channels",
        alice,
        json={"workspace_id": alice.workspace_id, "name": "general"},
    )
    await call(http, "POST", f"{b}/api/channels/{channel['id']}/join", bob)
    typing = {"type": "typing", "channel_id": channel["id"]}
    await next_of(on_a, "channel.member_added")  # alice's socket follows her new channel
    await next_of(observer, "channel.member_added")  # and bob's his
    await on_a.send_json(typing)
    assert (await next_of(observer, "typing"))["user_id"] == alice.id
    await on_a.send_json(typing)
    sent = await call(
        http, "POST", f"{a}/api/channels/{channel['id']}/messages", alice, json={"content": "x"}
    )
    frame = await observer.receive_json(timeout=TIMEOUT)  # the message, not a second typing
    assert (frame["type"], frame["message"]["id"]) == ("message.created", sent["id"])

    # The last socket closes: offline once the grace is over, not before.
    await on_a.close()
    closed = time.monotonic()
    assert await expect_next(observer, alice, "offline") - closed >= GRACE * 0.8

    # A reload that lands on the other process within the grace: nothing to see.
    on_a = await connect(http, a, alice)
    await expect_next(observer, alice, "online")
    await on_a.close()
    on_b = await connect(http, b, alice)
    await asyncio.sleep(GRACE * 1.5)
    await connect(http, a, carol)  # closed by the kill below
    await expect_next(observer, carol, "online")  # nothing of alice before it

    # A killed with SIGKILL: carol (only on A) goes offline once A's lease has run out;
    # alice, on B, stays online.
    process_a.send_signal(signal.SIGKILL)
    process_a.wait()
    killed = time.monotonic()
    took = await expect_next(observer, carol, "offline") - killed
    assert took < LEASE * 4 / 3 + 3, took  # the lease, a heartbeat of B's, slack for CI
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM presence_processes") == 1  # B only
        assert await conn.fetch("SELECT user_id FROM presence_sockets ORDER BY 1") == [
            (alice.id,),
            (bob.id,),
        ]
    finally:
        await conn.close()
    await on_b.close()
    await expect_next(observer, alice, "offline")
    await observer.close()
