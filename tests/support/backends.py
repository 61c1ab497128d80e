"""The app under test on a real port, and the S3 server behind a config."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from echora_server.app import create_app
from echora_server.config import Config
from support.faultproxy import FaultProxy
from support.seaweed import S3Server


def s3_server_of(request: pytest.FixtureRequest, config: Config) -> S3Server | None:
    if config.effective_storage != "s3":
        return None
    server: S3Server = request.getfixturevalue("s3_server")
    return server


@contextlib.asynccontextmanager
async def running_app(
    config: Config, *, handler_cancellation: bool
) -> AsyncIterator[tuple[web.Application, str, int]]:
    """The real app on a real port. aiohttp's test server always cancels handlers whose
    client left; ``web.run_app`` (production) does not: their reads and writes fail instead."""
    app = create_app(config)
    runner = web.AppRunner(app, handler_cancellation=handler_cancellation, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield app, host, port
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def behind_proxy(
    database_url: str,
    tmp_path: Path,
    s3_server: S3Server,
    s3_config_values: dict[str, Any],
    aiohttp_client: Callable[..., Awaitable[TestClient]],
    **settings: Any,
) -> AsyncIterator[tuple[FaultProxy, TestClient, Config]]:
    """The app under test with its S3 store behind a fault proxy."""
    endpoint = urlparse(s3_server.endpoint_url)
    assert endpoint.hostname is not None and endpoint.port is not None
    async with FaultProxy((endpoint.hostname, endpoint.port)) as proxy:
        config = Config(
            database_url=database_url,
            data_dir=tmp_path,
            **{**s3_config_values, "s3_endpoint_url": proxy.url, **settings},
        )
        yield proxy, await aiohttp_client(create_app(config)), config
