"""Operations: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio
import hmac
from typing import Literal

from aiohttp import hdrs, web
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.exposition import generate_latest
from pydantic import Field

from echora_server.config import CONFIG
from echora_server.core.errors import NotFound, Unauthorized
from echora_server.core.metrics import METRICS
from echora_server.core.route import Route
from echora_server.core.shapes import Shape
from echora_server.db.migrations import status as migration_status
from echora_server.db.pool import POOL, ping
from echora_server.storage.factory import STORAGE

CHECK_TIMEOUT = 2.0


class Lifecycle:
    """Set at SIGTERM: from then on /readyz answers 503, so load balancers stop sending."""

    def __init__(self) -> None:
        self.draining = False


LIFECYCLE = web.AppKey("lifecycle", Lifecycle)


class Liveness(Shape):
    status: Literal["ok"]


class Checks(Shape):
    database: str = Field(description='"ok", or what is wrong')
    migrations: str
    storage: str


class Readiness(Shape):
    status: Literal["ready", "unavailable", "draining"]
    checks: Checks


async def healthz(request: web.Request) -> web.Response:
    """The process is alive and serving; says nothing of its dependencies."""
    return web.json_response({"status": "ok"})


async def _check_database(request: web.Request) -> str:
    async with request.app[POOL].acquire(timeout=CHECK_TIMEOUT) as conn:
        await ping(conn)
    return "ok"


async def _check_migrations(request: web.Request) -> str:
    async with request.app[POOL].acquire(timeout=CHECK_TIMEOUT) as conn:
        state = await migration_status(conn)
    return state.describe()


async def _check_storage(request: web.Request) -> str:
    storage = request.app[STORAGE]
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            await storage.ping()
    except TimeoutError:
        storage.availability.failed()  # no answer in time is an answer: uploads wait for it
        raise
    return "ok"


async def _run(check: object) -> str:
    try:
        # A net over each check's own timeout.
        return await asyncio.wait_for(check, CHECK_TIMEOUT + 1)  # type: ignore[arg-type]
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # readiness reports every failure as "down"
        return f"down: {type(exc).__name__}"


async def readyz(request: web.Request) -> web.Response:
    """Ready when the database answers with the current schema and storage answers."""
    if request.app[LIFECYCLE].draining:
        skipped = "not checked: shutting down"
        return web.json_response(
            {
                "status": "draining",
                "checks": {"database": skipped, "migrations": skipped, "storage": skipped},
            },
            status=503,
            headers={"Cache-Control": "no-store"},
        )
    database, migrations, storage = await asyncio.gather(
        _run(_check_database(request)),
        _run(_check_migrations(request)),
        _run(_check_storage(request)),
    )
    checks = {"database": database, "migrations": migrations, "storage": storage}
    ready = all(v.startswith("ok") for v in checks.values())
    return web.json_response(
        {"status": "ready" if ready else "unavailable", "checks": checks},
        status=200 if ready else 503,
        headers={"Cache-Control": "no-store"},
    )


async def get_metrics(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    if config.metrics_listen and not request.get(METRICS_LISTENER, False):
        raise NotFound()  # served on its own listener only
    if config.metrics_token is not None:
        given = request.headers.get(hdrs.AUTHORIZATION, "").removeprefix("Bearer ")
        if not hmac.compare_digest(
            given.encode(), config.metrics_token.get_secret_value().encode()
        ):
            raise Unauthorized("/metrics needs its token (ECHORA_METRICS_TOKEN).")
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


# Set on the requests of the metrics-only listener (web.server).
METRICS_LISTENER = web.RequestKey("metrics_listener", bool)


ROUTES: tuple[Route, ...] = (
    Route(
        "GET", "/healthz", healthz, "Liveness", "ops", authenticated=False, schemas={200: Liveness}
    ),
    Route(
        "GET",
        "/readyz",
        readyz,
        "Readiness: database, migrations, storage",
        "ops",
        authenticated=False,
        responses={200: "Ready", 503: "A dependency is down, or the server is shutting down"},
        schemas={200: Readiness, 503: Readiness},
    ),
    Route(
        "GET",
        "/metrics",
        get_metrics,
        "Prometheus metrics (ECHORA_METRICS_TOKEN as a bearer token, when set)",
        "ops",
        authenticated=False,
        content_type="text/plain",
        responses={
            200: "The metrics",
            401: "ECHORA_METRICS_TOKEN is set and was not given",
            404: "Served on ECHORA_METRICS_LISTEN only",
        },
    ),
)
