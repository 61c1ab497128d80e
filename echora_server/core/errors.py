"""The API's error family: ``{"error": {"code", "message", "details"?}}``, stable codes."""

from __future__ import annotations

from typing import Any

import asyncpg


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


class DependencyError(Exception):
    """The database or file storage failed: a 503 with ``code``, whatever the request."""

    code = "service_unavailable"
    public_message = "The service is temporarily unavailable; try again shortly."


class DatabaseUnavailable(DependencyError):
    code = "database_unavailable"
    public_message = "The database is unavailable; try again shortly."


# What asyncpg raises when a connection is lost or the server is shutting down. Any
# other error (OSError and TimeoutError included) is a bug until proven otherwise.
_DATABASE_LOST = (
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
)


def unavailable(exc: BaseException) -> ApiError | None:
    """The 503 answering a failure to reach the database or storage; None otherwise."""
    if isinstance(exc, DependencyError):
        code, message = exc.code, exc.public_message
    elif isinstance(exc, _DATABASE_LOST):
        code, message = DatabaseUnavailable.code, DatabaseUnavailable.public_message
    else:
        return None
    return ServiceUnavailable(message, code=code, headers={"Retry-After": "5"})


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    return {"error": body}
