from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from support.people import People
from support.recording import RecordingFanout, recorder, recording_app

from echora_server.app import create_app
from echora_server.config import Config
from echora_server.core.logs import configure_logging

pytest_plugins = ["support.postgres", "support.seaweed"]


def pytest_configure(config: pytest.Config) -> None:
    # As the server logs (not structlog's default, whose tracebacks render every frame's
    # locals, slowly).
    configure_logging("info", "console")


@pytest.fixture
def config_overrides() -> dict[str, Any]:
    """Settings a module (or a test) gives every app it runs: override this fixture."""
    return {}


@pytest.fixture
def config(
    request: pytest.FixtureRequest,
    database_url: str,
    tmp_path: Path,
    config_overrides: dict[str, Any],
) -> Config:
    """The server's configuration for one test: its own database, and local storage
    unless the test runs with ``config`` = "s3" (a module's ``BACKENDS``, or a test's own
    parametrization), SeaweedFS under a fresh prefix."""
    backend: dict[str, Any] = {"storage": "local"}
    if getattr(request, "param", "local") == "s3":
        backend = request.getfixturevalue("s3_config_values")
    return Config(
        database_url=database_url,
        data_dir=tmp_path / "data",
        log_format="console",
        **{**backend, **config_overrides},
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A module with ``BACKENDS = ("local", "s3")`` runs each of its tests that uses the
    app on every backend, unless the test chose its own."""
    backends = getattr(metafunc.module, "BACKENDS", None)
    if backends is None or "config" not in metafunc.fixturenames:
        return
    chosen = any(
        "config" in str(mark.args[0]) for mark in metafunc.definition.iter_markers("parametrize")
    )
    if not chosen:
        metafunc.parametrize("config", backends, indirect=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """``-m "not s3"`` and ``-m "not browser"`` deselect what needs SeaweedFS or chromium."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_s3 = callspec is not None and "s3" in callspec.params.values()
        fixtures = getattr(item, "fixturenames", ())
        if on_s3 or "s3_server" in fixtures or "s3_config_values" in fixtures:
            item.add_marker(pytest.mark.s3)
        if "browser" in Path(str(item.path)).parent.name:
            item.add_marker(pytest.mark.browser)


@pytest.fixture
async def client(
    config: Config, aiohttp_client: Callable[..., Awaitable[TestClient]]
) -> TestClient:
    # `config` comes first so the test database outlives the client (teardown is LIFO).
    return await aiohttp_client(recording_app(create_app(config)))


@pytest.fixture
def events(client: TestClient) -> RecordingFanout:
    """Every event the app under test published, in order."""
    return recorder(client)


@pytest.fixture
def people(client: TestClient) -> People:
    """Creates users and logs them in against the running test server."""
    return People(client)
