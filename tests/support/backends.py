"""The app under test on a real port, and the S3 server behind a config."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from echora_server.app import create_app
from echora_server.config import Config
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
