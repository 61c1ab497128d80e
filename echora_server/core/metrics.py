"""Prometheus metrics: one registry per application, so tests can build many apps."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram

# Children kept per label set: ``labels()`` takes a lock and builds a key on every call. Beyond
# this many label sets (methods come from clients) children are looked up as before.
MAX_KEPT_CHILDREN = 512


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
        self.download_bodies = Counter(
            "echora_download_bodies",
            "Download bodies by how they reached the socket: sendfile (local disk), splice "
            "(from S3 in the kernel) or chunks (read through Python).",
            ["path"],
            registry=self.registry,
        )
        self.push_attempts = Counter(
            "echora_push_attempts",
            "Push attempts to bots' callbacks by outcome: delivered (2xx), failed (any other "
            "answer, a timeout, no connection), refused (a non-public address), disabled (410).",
            ["outcome"],
            registry=self.registry,
        )
        for outcome in ("delivered", "failed", "refused", "disabled"):
            self.push_attempts.labels(outcome)
        self.inbox_transitions = Counter(
            "echora_inbox_transitions",
            "Bots' inbox entries by state transition: staged, leased, fetched (a file of the "
            "entry downloaded by its bot, the first time), acknowledged.",
            ["transition"],
            registry=self.registry,
        )
        for transition in ("staged", "leased", "fetched", "acknowledged"):
            self.inbox_transitions.labels(transition)
        self._request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._body_children: dict[str, Any] = {}

    def request_done(self, method: str, route: str, status: int, seconds: float) -> None:
        """One HTTP request counted and timed."""
        key = (method, route, status)
        children = self._request_children.get(key)
        if children is None:
            children = (
                self.requests.labels(method, route, str(status)),
                self.latency.labels(method, route),
            )
            if len(self._request_children) < MAX_KEPT_CHILDREN:
                self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def download_body(self, path: str) -> None:
        """A download body sent by ``path`` (sendfile, splice, chunks); created when first used."""
        child = self._body_children.get(path)
        if child is None:
            child = self._body_children[path] = self.download_bodies.labels(path)
        child.inc()


METRICS = web.AppKey("metrics", Metrics)
