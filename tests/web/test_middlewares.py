"""The middlewares: one JSON error shape with stable codes, request ids, metrics."""

from __future__ import annotations

import io
from collections.abc import Awaitable, Callable

import asyncpg
import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestClient
from support.people import People

from echora_server.core.errors import DatabaseUnavailable
from echora_server.core.metrics import METRICS, Metrics
from echora_server.storage.base import StorageError
from echora_server.web.middlewares import (
    error_middleware,
    metrics_middleware,
    request_context_middleware,
)


def assert_error_shape(body: dict, code: str) -> None:  # type: ignore[type-arg]
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


async def test_router_404(client: TestClient) -> None:
    response = await client.get("/api/nothing-here")
    assert response.status == 404
    assert response.content_type == "application/json"
    assert_error_shape(await response.json(), "not_found")
    assert response.headers["Cache-Control"] == "no-store"


async def test_router_405(client: TestClient) -> None:
    response = await client.put("/api/me")
    assert response.status == 405
    assert_error_shape(await response.json(), "method_not_allowed")
    assert "GET" in response.headers["Allow"]


async def test_malformed_json_is_kept_apart_from_invalid_data(
    client: TestClient, people: People
) -> None:
    alice = await people.create("alice")
    bad = await alice.post(
        "/api/tokens", data=b"{not json", headers={**alice.auth, "Content-Type": "application/json"}
    )
    assert bad.status == 400
    assert_error_shape(await bad.json(), "invalid_json")
    invalid = await alice.post("/api/tokens", json={"name": "", "surprise": 1})
    assert invalid.status == 422
    body = await invalid.json()
    assert_error_shape(body, "invalid_request")
    assert {d["field"] for d in body["error"]["details"]} == {"name", "surprise"}


async def test_wrong_content_type(client: TestClient, people: People) -> None:
    alice = await people.create("alice")
    response = await alice.post("/api/tokens", data="name=x")
    assert response.status == 415
    assert_error_shape(await response.json(), "unsupported_media_type")


async def test_oversize_json_body_gives_413(client: TestClient, people: People) -> None:
    alice = await people.create("alice")
    response = await alice.post(
        "/api/tokens",
        data=io.BytesIO(b'{"name": "' + b"x" * (2 * 1024 * 1024) + b'"}'),
        headers={**alice.auth, "Content-Type": "application/json"},
    )
    assert response.status == 413
    body = await response.json()
    assert_error_shape(body, "payload_too_large")
    assert body["error"]["details"]["limit_bytes"] == 1024 * 1024


async def test_non_numeric_ids_are_not_found(client: TestClient, people: People) -> None:
    alice = await people.create("alice")
    for path in ("/api/workspaces/abc/members", "/api/workspaces/99999999999999999999/members"):
        response = await alice.get(path)
        assert response.status == 404
        assert_error_shape(await response.json(), "not_found")


async def test_request_id_is_echoed_or_made(client: TestClient) -> None:
    mine = await client.get("/healthz", headers={"X-Request-ID": "trace-12345678"})
    assert mine.headers["X-Request-ID"] == "trace-12345678"
    made = await client.get("/healthz", headers={"X-Request-ID": "not a valid id!"})
    assert len(made.headers["X-Request-ID"]) == 32


async def test_client_page_and_files_carry_security_headers(client: TestClient) -> None:
    for path in ("/", "/static/app.css", "/static/js/main.js"):
        response = await client.get(path)
        assert response.status == 200, path
        policy = response.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in policy
        assert "connect-src 'self';" in policy  # the local store takes no direct uploads
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Cache-Control"] == "no-cache"
    missing = await client.get("/static/nope.js")
    assert missing.status == 404
    assert missing.headers["Cache-Control"] == "no-store"
    assert_error_shape(await missing.json(), "not_found")
    for escape in ("/static/%2e%2e/pyproject.toml", "/static/..%2fpyproject.toml"):
        response = await client.get(escape)
        assert response.status == 404, escape


async def test_a_name_the_filesystem_refuses_is_not_found(client: TestClient) -> None:
    response = await client.get("/static/" + "a" * 300)  # ENAMETOOLONG, not a database
    assert response.status == 404
    assert_error_shape(await response.json(), "not_found")


FAILURES = {
    "/file-not-found": FileNotFoundError(2, "No such file or directory"),
    "/connection-reset": ConnectionResetError(104, "Connection reset by peer"),
    "/timeout": TimeoutError(),
    "/os-error": OSError(5, "Input/output error"),
    "/database-lost": asyncpg.ConnectionDoesNotExistError("connection was closed"),
    "/database-unreachable": DatabaseUnavailable("cannot connect"),
    "/storage-down": StorageError("S3 GetObject failed"),
}


@pytest.fixture
async def failing(aiohttp_client: Callable[..., Awaitable[TestClient]]) -> TestClient:
    """The real middlewares over handlers that raise what their path names."""

    async def fail(request: web.Request) -> web.Response:
        raise FAILURES[request.path]

    app = web.Application(
        middlewares=[request_context_middleware, metrics_middleware, error_middleware]
    )
    app[METRICS] = Metrics()
    for path in FAILURES:
        app.router.add_get(path, fail)
    return await aiohttp_client(app)


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/file-not-found", 500, "internal_error"),
        ("/connection-reset", 500, "internal_error"),
        ("/timeout", 500, "internal_error"),
        ("/os-error", 500, "internal_error"),
        ("/database-lost", 503, "database_unavailable"),
        ("/database-unreachable", 503, "database_unavailable"),
        ("/storage-down", 503, "storage_unavailable"),
    ],
)
async def test_only_the_database_is_database_unavailable(
    failing: TestClient, path: str, status: int, code: str
) -> None:
    with structlog.testing.capture_logs() as logs:
        response = await failing.get(path)
    assert response.status == status
    assert_error_shape(await response.json(), code)
    if status == 500:
        assert "Retry-After" not in response.headers
        assert [e["event"] for e in logs if e["log_level"] == "error"] == ["unhandled_error"]
    else:
        assert response.headers["Retry-After"] == "5"
        assert not [e for e in logs if e["log_level"] == "error"]


async def test_metrics_by_route_template(client: TestClient) -> None:
    for _ in range(3):
        await client.get("/api/workspaces/7/members")  # 401, but counted under the template
    await client.get("/no/such/path")
    text = await (await client.get("/metrics")).text()
    template = "/api/workspaces/{workspace_id}/members"
    assert f'echora_http_requests_total{{method="GET",route="{template}",status="401"}} 3.0' in text
    assert 'route="(unmatched)"' in text
    assert "/api/workspaces/7/" not in text
    assert "echora_http_request_duration_seconds_bucket" in text
