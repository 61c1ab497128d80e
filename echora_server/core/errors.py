"""One error family and the one middleware that shapes every failure as JSON.

Body: ``{"error": {"code": str, "message": str, "details"?: any}}``. Codes are stable API;
messages are for humans. Nothing else (no stack trace, no driver message) leaves the server.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import structlog
from aiohttp import web

from echora_server.storage.base import StorageError

log = structlog.get_logger("echora.errors")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    status = 400
    code = "bad_request"
    message = "Bad request."

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.message = message or self.message
        self.code = code or self.code
        self.details = details
        self.headers = headers or {}
        super().__init__(self.message)

    def with_status(self, status: int) -> ApiError:
        self.status = status
        return self


class InvalidJson(ApiError):
    code = "invalid_json"
    message = "The request body is not valid JSON."


class InvalidRequest(ApiError):
    status = 422
    code = "invalid_request"
    message = "The request data is invalid."


class Unauthorized(ApiError):
    status = 401
    code = "auth_required"
    message = "Authentication required."


class Forbidden(ApiError):
    status = 403
    code = "forbidden"
    message = "You are not allowed to do this."


class NotFound(ApiError):
    status = 404
    code = "not_found"
    message = "Not found."


class Conflict(ApiError):
    status = 409
    code = "conflict"
    message = "Conflict."


class TooManyRequests(ApiError):
    status = 429
    code = "rate_limited"
    message = "Too many requests; slow down."


class ServiceUnavailable(ApiError):
    status = 503
    code = "service_unavailable"
    message = "The service is temporarily unavailable."


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

DATABASE_DOWN = (
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    ConnectionError,
    OSError,
    TimeoutError,
)


def outage(exc: BaseException) -> ApiError:
    """The 503 a storage or database failure answers with (for HTTP and WebSocket alike)."""
    if isinstance(exc, StorageError):
        return ServiceUnavailable(
            "File storage is unavailable; try again shortly.",
            code="storage_unavailable",
            headers={"Retry-After": "5"},
        )
    return ServiceUnavailable(
        "The database is unavailable; try again shortly.",
        code="database_unavailable",
        headers={"Retry-After": "5"},
    )


def error_response(
    status: int,
    code: str,
    message: str,
    details: Any = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    response = web.json_response({"error": body}, status=status, headers=headers)
    response.headers["Cache-Control"] = "no-store"
    return response


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    """The same shape for WebSocket error frames."""
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    return {"error": body}


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except Exception as exc:
        if request.writer.output_size:
            # A response (a download, a WebSocket handshake) has begun: no error can
            # follow its status line. aiohttp closes the connection on what we re-raise.
            if not isinstance(exc, ConnectionError):  # else the client simply left
                log.exception("error_after_response_started", path=request.path)
            raise
        return _answer(request, exc)


def _answer(request: web.Request, exc: Exception) -> web.StreamResponse:
    """The JSON error for ``exc`` (re-raised when it is a redirect or the like)."""
    if isinstance(exc, ApiError):
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            raise exc
        code = _HTTP_CODES.get(exc.status, "http_error")
        message = exc.reason if exc.status != 413 else "The request body is too large."
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        details = {"limit_bytes": request.client_max_size} if exc.status == 413 else None
        return error_response(exc.status, code, message, details, headers)
    if isinstance(exc, (StorageError, *DATABASE_DOWN)):
        api = outage(exc)
        log.warning(api.code, path=request.path, exc_info=exc)
        return error_response(api.status, api.code, api.message, headers=api.headers)
    log.error("unhandled_error", path=request.path, method=request.method, exc_info=exc)
    return error_response(500, "internal_error", "Internal server error.")
