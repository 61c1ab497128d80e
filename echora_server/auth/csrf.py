"""CSRF defence for cookie requests: a state change needs an allowed ``Origin`` or
``Sec-Fetch-Site``, else ``X-Requested-With``, which a foreign page cannot add unpreflighted."""

from __future__ import annotations

import structlog
from aiohttp import web

from echora_server.config import CONFIG
from echora_server.core.errors import Forbidden

log = structlog.get_logger("echora.csrf")


def allowed_origins(request: web.Request) -> set[str]:
    config = request.app[CONFIG]
    origins = set(config.allowed_origins)
    if config.public_url:
        scheme, _, rest = config.public_url.partition("://")
        origins.add(f"{scheme}://{rest.split('/', 1)[0]}")
    else:
        # Without a configured public URL, the server's own origin as the client sees it.
        origins.add(f"{request.scheme}://{request.host}")
    return origins


def origin_allowed(request: web.Request, *, browser_only: bool = False) -> bool:
    origin = request.headers.get("Origin")
    if origin is not None:
        return origin in allowed_origins(request)
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None:
        return fetch_site in ("same-origin", "none")
    return browser_only or "X-Requested-With" in request.headers


def log_refused_origin(request: web.Request) -> None:
    """What a wrong ECHORA_PUBLIC_URL (or a proxy's missing headers) looks like in the log."""
    log.warning(
        "origin_refused",
        received=request.headers.get("Origin"),
        fetch_site=request.headers.get("Sec-Fetch-Site"),
        expected=sorted(allowed_origins(request)),
    )


def check_csrf(request: web.Request, *, browser_only: bool = False) -> None:
    """Refuse a cross-site request; ``browser_only`` (no cookie yet: login) lets non-browsers by."""
    if not origin_allowed(request, browser_only=browser_only):
        log_refused_origin(request)
        raise Forbidden(
            "Cross-site request refused: the request's origin is not allowed.",
            code="csrf_failed",
        )
