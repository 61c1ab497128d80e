"""The verified-token cache (ECHORA_TOKEN_CACHE_TTL): fewer lookups, and no later revocation.

Revocation is proved across two real server processes on one database; a revocation the
events could not carry (the listener lost) is proved through the cache being emptied."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from support.people import People
from support.processes import echora_env, free_port, start_echora, stop

from echora_server.accounts import service as accounts
from echora_server.auth.token_cache import TOKEN_CACHE, TokenCache
from echora_server.db.pool import POOL
from echora_server.db.records import Credential, User

WHEN = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def credential(token_id: int) -> Credential:
    return Credential(User(1, "alice", "Alice", WHEN), token_id, None, None, revoked=False)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_entries_live_for_the_ttl_only() -> None:
    clock = Clock()
    cache = TokenCache(5, clock=clock)
    cache.put(b"a", credential(1), cache.generation())
    clock.now += 4.9
    assert cache.get(b"a") == credential(1)
    clock.now += 0.1
    assert cache.get(b"a") is None


def test_a_lookup_older_than_a_revocation_is_not_kept() -> None:
    """Read before the revocation, stored after it: that copy would say "valid"."""
    cache = TokenCache(5)
    generation = cache.generation()
    cache.forget_token(1)  # revoked while the lookup was on its way
    cache.put(b"a", credential(1), generation)
    assert cache.get(b"a") is None and len(cache) == 0


def test_ttl_zero_keeps_nothing_and_the_size_is_bounded() -> None:
    off = TokenCache(0)
    off.put(b"a", credential(1), off.generation())
    assert off.get(b"a") is None and len(off) == 0
    small = TokenCache(5, max_entries=2)
    for i in range(3):
        small.put(bytes([i]), credential(i), small.generation())
    assert len(small) == 2 and small.get(b"\x00") is None and small.get(b"\x02") is not None


def test_nothing_is_served_while_events_may_be_missed() -> None:
    cache = TokenCache(5)
    cache.put(b"a", credential(1), cache.generation())
    cache.events_lost()
    assert cache.get(b"a") is None
    cache.put(b"a", credential(1), cache.generation())
    cache.events_restored()
    assert cache.get(b"a") is None and len(cache) == 0
    cache.put(b"a", credential(1), cache.generation())
    assert cache.get(b"a") is not None


@pytest.fixture
def config_overrides() -> dict[str, Any]:
    return {"token_cache_ttl": 60}  # long: anything refused below was refused by an event


async def error_code(response: aiohttp.ClientResponse) -> str:
    return str((await response.json())["error"]["code"])


async def test_an_expired_token_is_refused_while_cached(client: TestClient, people: People) -> None:
    alice = await people.create("alice")
    async with client.app[POOL].acquire() as conn:
        _, secret = await accounts.issue_api_token(
            conn, alice.user_id, "short", expires_in=dt.timedelta(seconds=1)
        )
    headers = {"Authorization": f"Bearer {secret}"}
    assert (await client.get("/api/me", headers=headers)).status == 200
    cache = client.app[TOKEN_CACHE]
    cached = len(cache)
    assert cached >= 1
    await asyncio.sleep(1.1)
    response = await client.get("/api/me", headers=headers)
    assert response.status == 401 and await error_code(response) == "token_expired"
    assert len(cache) == cached  # still cached: the expiry was checked on the cached copy


async def test_a_cached_token_revoked_where_events_cannot_tell_is_refused_once_they_resume(
    client: TestClient, people: People, database_url: str
) -> None:
    """The listener is cut: a revocation written meanwhile has no event. The cache serves
    nothing until the listener is back, and then starts empty."""
    alice = await people.create("alice")
    assert (await alice.get("/api/me")).status == 200
    cache = client.app[TOKEN_CACHE]
    assert len(cache) == 1
    admin = await asyncpg.connect(database_url)
    try:
        ended = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND query LIKE 'LISTEN%'"
        )
        assert ended == 1
        async with asyncio.timeout(10):
            while len(cache):
                await asyncio.sleep(0.01)
        await admin.execute(
            "UPDATE api_tokens SET revoked_at = now() WHERE user_id = $1", alice.user_id
        )
    finally:
        await admin.close()
    response = await alice.get("/api/me")
    assert response.status == 401 and await error_code(response) == "token_revoked"


@pytest.mark.parametrize("config_overrides", [{"token_cache_ttl": 0}])
async def test_ttl_zero_looks_every_request_up(client: TestClient, people: People) -> None:
    alice = await people.create("alice")
    for _ in range(3):
        assert (await alice.get("/api/me")).status == 200
    assert len(client.app[TOKEN_CACHE]) == 0


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


@pytest.fixture
async def two_servers(database_url: str, tmp_path: Path) -> AsyncIterator[tuple[str, str, str]]:
    """Two ``echora serve`` processes on one database, and an API token of alice's."""
    conn = await asyncpg.connect(database_url)
    try:
        user, _ = await accounts.create_user(
            conn, workspace_slug="acme", username="alice", password="correct horse battery"
        )
        _, secret = await accounts.issue_api_token(conn, user.id, "bot")
    finally:
        await conn.close()
    ports = [free_port(), free_port()]
    processes = []
    try:
        for port in ports:
            env = echora_env(
                ECHORA_DATABASE_URL=database_url,
                ECHORA_STORAGE="local",
                ECHORA_DATA_DIR=str(tmp_path),
                ECHORA_LISTEN=f"127.0.0.1:{port}",
                ECHORA_SWEEP_INTERVAL="0",
                ECHORA_TOKEN_CACHE_TTL="60",
                ECHORA_LOG_LEVEL="warning",
            )
            processes.append(start_echora("serve", env=env))
        for port in ports:
            await asyncio.to_thread(wait_ready, port)
        yield f"http://127.0.0.1:{ports[0]}", f"http://127.0.0.1:{ports[1]}", secret
    finally:
        for process in processes:
            stop(process)


async def test_revocation_takes_effect_at_once_in_both_processes(
    two_servers: tuple[str, str, str],
) -> None:
    a, b, secret = two_servers
    headers = {"Authorization": f"Bearer {secret}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        for base in (a, b, a, b):  # cached in both
            async with http.get(f"{base}/api/me") as response:
                assert response.status == 200
        async with http.get(f"{a}/api/tokens") as response:
            (token,) = (await response.json())["tokens"]
        async with http.delete(f"{a}/api/tokens/{token['id']}") as response:
            assert response.status == 204
        async with http.get(f"{a}/api/me") as response:  # the revoking process: at once
            assert response.status == 401 and await error_code(response) == "token_revoked"
        # The other process on the event: milliseconds, far inside the 60 s TTL.
        started = time.monotonic()
        async with asyncio.timeout(5):
            while True:
                async with http.get(f"{b}/api/me") as response:
                    if response.status == 401:
                        assert await error_code(response) == "token_revoked"
                        break
                    assert response.status == 200
                await asyncio.sleep(0.01)
        assert time.monotonic() - started < 5
