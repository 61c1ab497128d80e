"""/healthz and /readyz, and what an outage of PostgreSQL or S3 looks like to clients.

Outages are real: the server reaches its dependency through a TCP proxy that the test cuts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from aiohttp.test_utils import TestClient
from support.backends import behind_proxy
from support.faultproxy import FaultProxy
from support.people import People
from support.postgres import postgres_socket
from support.seaweed import S3Server

from echora_server.app import create_app
from echora_server.config import Config

ClientFactory = Callable[..., Awaitable[TestClient]]


async def wait_ready(client: TestClient, timeout: float = 15.0) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        response = await client.get("/readyz")
        body: dict[str, Any] = await response.json()
        if response.status == 200 or asyncio.get_running_loop().time() > deadline:
            assert response.status == 200, body
            return body
        await asyncio.sleep(0.2)


async def test_healthz_and_readyz(client: TestClient) -> None:
    assert (await client.get("/healthz")).status == 200
    body = await wait_ready(client)
    assert body["checks"] == {"database": "ok", "migrations": "ok", "storage": "ok"}


async def test_readyz_and_api_follow_a_postgres_outage(
    database_url: str, tmp_path: Path, aiohttp_client: ClientFactory
) -> None:
    socket, dbname = postgres_socket(database_url)
    async with FaultProxy(socket) as proxy:
        config = Config(
            database_url=f"postgresql://postgres@127.0.0.1:{proxy.port}/{dbname}",
            data_dir=tmp_path,
        )
        client = await aiohttp_client(create_app(config))
        alice = await People(client).create("alice")
        await wait_ready(client)

        proxy.block()
        down = await client.get("/readyz")
        assert down.status == 503
        checks = (await down.json())["checks"]
        assert checks["database"].startswith("down") and checks["storage"] == "ok"
        api = await alice.get("/api/me")
        assert api.status == 503
        assert (await api.json())["error"]["code"] == "database_unavailable"
        assert api.headers["Retry-After"] == "5"
        assert api.headers["Cache-Control"] == "no-store"
        assert (await client.get("/healthz")).status == 200  # alive, just not ready

        proxy.unblock()
        await wait_ready(client)
        assert (await alice.get("/api/me")).status == 200


async def test_readyz_follows_an_s3_outage(
    database_url: str,
    s3_config_values: dict[str, Any],
    tmp_path: Path,
    aiohttp_client: ClientFactory,
) -> None:
    endpoint = urlparse(s3_config_values["s3_endpoint_url"])
    assert endpoint.hostname is not None and endpoint.port is not None
    async with FaultProxy((endpoint.hostname, endpoint.port)) as proxy:
        config = Config(
            database_url=database_url,
            data_dir=tmp_path,
            **{**s3_config_values, "s3_endpoint_url": proxy.url},
        )
        client = await aiohttp_client(create_app(config))
        await wait_ready(client)

        proxy.block()
        down = await client.get("/readyz")
        assert down.status == 503
        checks = (await down.json())["checks"]
        assert checks["storage"].startswith("down") and checks["database"] == "ok"

        proxy.unblock()
        await wait_ready(client)


async def test_readyz_reports_a_silent_store_within_the_bound(
    database_url: str,
    s3_server: S3Server,
    s3_config_values: dict[str, Any],
    tmp_path: Path,
    aiohttp_client: ClientFactory,
) -> None:
    async with behind_proxy(
        database_url, tmp_path, s3_server, s3_config_values, aiohttp_client, storage_timeout=1
    ) as (proxy, client, _):
        await wait_ready(client)
        proxy.silence()  # connects, never answers
        loop = asyncio.get_running_loop()
        started = loop.time()
        down = await client.get("/readyz")
        assert loop.time() - started < 1 + 1.0
        assert down.status == 503
        checks = (await down.json())["checks"]
        assert checks["storage"].startswith("down") and checks["database"] == "ok"
        proxy.speak()
        await wait_ready(client)


async def test_metrics_behind_a_token(
    database_url: str, tmp_path: Path, aiohttp_client: ClientFactory
) -> None:
    config = Config(
        database_url=database_url, data_dir=tmp_path, storage="local", metrics_token="s3cr3t-m"
    )
    client = await aiohttp_client(create_app(config))
    assert (await client.get("/metrics")).status == 401
    assert (await client.get("/metrics", headers={"Authorization": "Bearer nope"})).status == 401
    ok = await client.get("/metrics", headers={"Authorization": "Bearer s3cr3t-m"})
    assert ok.status == 200 and "echora_http_requests_total" in await ok.text()
