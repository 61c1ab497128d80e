from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from aiohttp.test_utils import TestClient
from support.people import People

from echora_server.app import create_app
from echora_server.config import Config

pytest_plugins = ["support.postgres", "support.seaweed"]


@pytest.fixture
def config(database_url: str, tmp_path) -> Config:  # type: ignore[no-untyped-def]
    """The server's configuration for one test: its own database, local file storage."""
    return Config(database_url=database_url, data_dir=tmp_path / "data", log_format="console")


@pytest.fixture
async def client(
    config: Config, aiohttp_client: Callable[..., Awaitable[TestClient]]
) -> TestClient:
    # `config` comes first so the test database outlives the client (teardown is LIFO).
    return await aiohttp_client(create_app(config))


@pytest.fixture
def people(client: TestClient) -> People:
    """Creates users and logs them in against the running test server."""
    return People(client)
