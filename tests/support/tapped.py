"""The app under test talking to PostgreSQL, and to SeaweedFS if asked, through real proxies
whose taps count what crosses them (``support.wiretap``)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from aiohttp.test_utils import TestClient

from echora_server.app import create_app
from echora_server.config import Config
from support.faultproxy import FaultProxy
from support.postgres import postgres_socket
from support.wiretap import HttpTap, PgTap

ClientFactory = Callable[..., Awaitable[TestClient]]


@contextlib.asynccontextmanager
async def tapped_app(
    database_url: str,
    tmp_path: Path,
    aiohttp_client: ClientFactory,
    *,
    s3: pytest.FixtureRequest | None = None,
    **settings: Any,
) -> AsyncIterator[tuple[TestClient, PgTap, HttpTap]]:
    """Local storage, or SeaweedFS when ``s3`` is the test's request (its fixture values)."""
    pg, store = PgTap(), HttpTap()
    socket, dbname = postgres_socket(database_url)
    async with contextlib.AsyncExitStack() as stack:
        pg_proxy = await stack.enter_async_context(FaultProxy(socket, tap=pg.connection))
        values: dict[str, Any] = {"storage": "local"}
        if s3 is not None:
            values = s3.getfixturevalue("s3_config_values")
            endpoint = urlparse(values["s3_endpoint_url"])
            assert endpoint.hostname is not None and endpoint.port is not None
            s3_proxy = await stack.enter_async_context(
                FaultProxy((endpoint.hostname, endpoint.port), tap=store.connection)
            )
            values = {**values, "s3_endpoint_url": s3_proxy.url}
        config = Config(
            database_url=f"postgresql://postgres@127.0.0.1:{pg_proxy.port}/{dbname}",
            data_dir=tmp_path,
            sweep_interval=0,
            **{**values, **settings},
        )
        client = await aiohttp_client(create_app(config))
        try:
            yield client, pg, store
        finally:
            await client.close()  # before the proxies it talks through
