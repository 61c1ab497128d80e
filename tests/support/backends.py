"""Running the app under test on each storage backend, and on a real port.

@pytest.fixture(params=["local", "s3"])
def config(request, database_url, tmp_path) -> Config:
    return backend_config(request, database_url, tmp_path, max_upload_bytes=...)
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from echora_server.app import create_app
from echora_server.config import Config
from support.seaweed import S3Server


def backend_config(
    request: pytest.FixtureRequest, database_url: str, tmp_path: Path, **overrides: Any
) -> Config:
    """The config for ``request.param`` (``"local"`` or ``"s3"``: SeaweedFS under a
    fresh prefix), with ``overrides``."""
    backend: dict[str, Any] = {"storage": "local"}
    if request.param == "s3":
        backend = request.getfixturevalue("s3_config_values")
    return Config(
        database_url=database_url,
        data_dir=tmp_path / "data",
        log_format="console",
        **{**backend, **overrides},
    )


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
