"""Operations: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio
from typing import Literal

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.exposition import generate_latest
from pydantic import Field

from echora_server.core.metrics import METRICS
from echora_server.core.route import Route
from echora_server.core.shapes import Shape
from echora_server.db.migrations import status as migration_status
from echora_server.db.pool import POOL, ping
from echora_server.storage.factory import STORAGE

CHECK_TIMEOUT = 2.0


class Liveness(Shape):
    status: Literal["ok"]


class Checks(Shape):
    database: str = Field(description='"ok", or what is wrong')
    migrations: str
    storage: str


class Readiness(Shape):
    status: Literal["ready", "unavailable"]
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
    return "ok" if state.current else f"pending: {state.pending}"


async def _check_storage(request: web.Request) -> str:
    await request.app[STORAGE].ping()
    return "ok"


async def _run(check: object) -> str:
    try:
        return await asyncio.wait_for(check, CHECK_TIMEOUT)  # type: ignore[arg-type]
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # readiness reports every failure as "down"
        return f"down: {type(exc).__name__}"


async def readyz(request: web.Request) -> web.Response:
    """Ready when the database answers with the current schema and storage answers."""
    database, migrations, storage = await asyncio.gather(
        _run(_check_database(request)),
        _run(_check_migrations(request)),
        _run(_check_storage(request)),
    )
    checks = {"database": database, "migrations": migrations, "storage": storage}
    ready = all(v == "ok" for v in checks.values())
    return web.json_response(
        {"status": "ready" if ready else "unavailable", "checks": checks},
        status=200 if ready else 503,
        headers={"Cache-Control": "no-store"},
    )


async def get_metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


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
        responses={200: "Ready", 503: "A dependency is down"},
        schemas={200: Readiness, 503: Readiness},
    ),
    Route(
        "GET",
        "/metrics",
        get_metrics,
        "Prometheus metrics",
        "ops",
        authenticated=False,
        content_type="text/plain",
    ),
)
