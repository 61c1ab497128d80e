"""The middlewares, outermost first: request id and access log, metrics, errors."""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

import structlog
from aiohttp import web

from echora_server.audit.record import bind_origin
from echora_server.core.errors import ApiError, error_body, unavailable
from echora_server.core.metrics import METRICS
from echora_server.core.route import Handler

REQUEST_ID = web.RequestKey("request_id", str)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,128}$")
access_log = structlog.get_logger("echora.access")
_access_level = logging.getLogger("echora.access")  # the stdlib logger behind it
log = structlog.get_logger("echora.errors")

# Router and framework errors keep the same shape, with stable codes of their own.
_HTTP_CODES = {
    400: "bad_request",
    401: "auth_required",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


def bind_request_id(request: web.Request) -> None:
    """The client's X-Request-ID when it is sane, else a new one; on the request and logs."""
    incoming = request.headers.get("X-Request-ID", "")
    request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
    request[REQUEST_ID] = request_id
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=request_id)
    bind_origin(request_id, request.remote)


def log_request(request: web.Request, status: int, started: float, **fields: Any) -> None:
    if not _access_level.isEnabledFor(logging.INFO):
        return  # nothing to build: the line would be dropped
    access_log.info(
        "request",
        method=request.method,
        path=request.path,
        status=status,
        duration_ms=round((time.perf_counter() - started) * 1000, 1),
        remote=request.remote,
        **fields,
    )


@web.middleware
async def request_context_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    bind_request_id(request)
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    finally:
        log_request(request, status, started)


async def add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: every response carries the id, streamed ones included."""
    if REQUEST_ID in request:
        response.headers["X-Request-ID"] = request[REQUEST_ID]


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
        seconds = time.perf_counter() - started
        metrics.request_done(request.method, route_template(request), status, seconds)


def error_response(
    status: int,
    code: str,
    message: str,
    details: Any = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    response = web.json_response(error_body(code, message, details), status=status, headers=headers)
    response.headers["Cache-Control"] = "no-store"
    return response


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure as JSON, and nothing else: no stack trace, no driver message."""
    try:
        return await handler(request)
    except Exception as exc:
        if request.writer.output_size:
            # A response has begun, so no error can follow; aiohttp closes the connection.
            if not isinstance(exc, ConnectionError):  # else the client simply left
                log.exception("error_after_response_started", path=request.path)
            raise
        return answer(request, exc)


def answer(request: web.Request, exc: Exception) -> web.StreamResponse:
    """The error response for ``exc``, logged as its kind deserves."""
    if isinstance(exc, ApiError):
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            raise exc  # a redirect or the like
        code = _HTTP_CODES.get(exc.status, "http_error")
        message = exc.reason if exc.status != 413 else "The request body is too large."
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        details = {"limit_bytes": request.client_max_size} if exc.status == 413 else None
        return error_response(exc.status, code, message, details, headers)
    outage = unavailable(exc)
    if outage is not None:
        # What failed, not a traceback: an outage is not a bug, and one is rendered per request.
        cause = exc.__cause__
        log.warning(
            outage.code,
            path=request.path,
            error=str(exc),
            cause=f"{type(cause).__name__}: {cause}" if cause else None,
        )
        return error_response(outage.status, outage.code, outage.message, headers=outage.headers)
    log.error("unhandled_error", path=request.path, method=request.method, exc_info=exc)
    return error_response(500, "internal_error", "Internal server error.")
