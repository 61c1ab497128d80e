"""Prometheus metrics, one registry per application (so tests can build many apps)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

from echora_server.keys import METRICS

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "echora_http_requests",
            "HTTP requests by route template, method and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "echora_http_request_duration_seconds",
            "HTTP request latency by route template.",
            ["method", "route"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        # The cleanup sweeper (sweeper_task.py); kinds are SweepResult's fields.
        self.sweep_removed = Counter(
            "echora_sweep_removed",
            "What cleanup sweeps removed, by kind.",
            ["kind"],
            registry=self.registry,
        )
        self.sweep_errors = Counter(
            "echora_sweep_errors",
            "Cleanup operations that failed (a failed sweep counts one); retried later.",
            registry=self.registry,
        )
        self.sweep_duration = Histogram(
            "echora_sweep_duration_seconds",
            "How long one cleanup sweep took.",
            registry=self.registry,
            buckets=(0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600),
        )
        self.sweep_last_success = Gauge(
            "echora_sweep_last_success_timestamp_seconds",
            "When a cleanup sweep last finished without any error (Unix time).",
            registry=self.registry,
        )


def route_template(request: web.Request) -> str:
    """The route's template (``/api/files/{id}``), never the raw path (unbounded labels)."""
    resource = request.match_info.route.resource
    if resource is None:  # the router's 404/405 pseudo-routes
        return "(unmatched)"
    return resource.canonical


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    metrics = request.app[METRICS]
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    finally:
        route = route_template(request)
        metrics.requests.labels(request.method, route, str(status)).inc()
        metrics.latency.labels(request.method, route).observe(time.perf_counter() - started)


async def get_metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
