"""S3 errors turned into StorageError or InvalidRange (every call goes through ``translated``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import aiohttp
from botocore.exceptions import BotoCoreError, ClientError

from echora_server.storage.base import Availability, InvalidRange, ObjectNotFound, StorageError

NOT_FOUND_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
_RETRYABLE_CODES = frozenset({"SlowDown", "RequestTimeout", "Throttling"})
# What an S3 call raises when the store refused or was unreachable; anything else is our bug.
S3_ERRORS = (ClientError, BotoCoreError, aiohttp.ClientError, OSError)


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _http_status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def is_transient(exc: Exception) -> bool:
    """Worth retrying: the store was unreachable or said so (5xx, throttling)."""
    if not isinstance(exc, ClientError):
        return True
    return _http_status(exc) >= 500 or error_code(exc) in _RETRYABLE_CODES


def may_have_been_written(exc: BaseException) -> bool:
    """After a failed PutObject/Complete: could the object exist? Not if the store said 4xx."""
    cause = exc.__cause__ if isinstance(exc, StorageError) else None
    if isinstance(cause, ClientError):
        return _http_status(cause) >= 500
    return True


def translate(exc: Exception, action: str, key: str | None) -> StorageError | InvalidRange:
    if isinstance(exc, ClientError):
        code = error_code(exc)
        if key is not None and code in NOT_FOUND_CODES:
            return ObjectNotFound(key)
        if code == "InvalidRange":
            return InvalidRange(f"range not satisfiable for {key!r}")
        return StorageError(f"S3 {action} failed: {code or 'unknown error'}")
    return StorageError(f"S3 {action} failed: {type(exc).__name__}: {exc}")


@contextlib.contextmanager
def translated(action: str, key: str | None = None) -> Iterator[None]:
    try:
        yield
    except S3_ERRORS as exc:
        raise translate(exc, action, key) from exc


@contextlib.asynccontextmanager
async def bounded(
    action: str, seconds: float, availability: Availability, key: str | None = None
) -> AsyncIterator[None]:
    """``translated``, within ``seconds`` for the whole call, botocore's retries included:
    a store that accepts connections and then says nothing must not hold a request."""
    try:
        async with asyncio.timeout(seconds):
            with translated(action, key):
                yield
    except (ObjectNotFound, InvalidRange):
        availability.succeeded()  # the store answered
        raise
    except StorageError:
        availability.failed()
        raise
    except TimeoutError as exc:  # the deadline's own (translated turned the others)
        availability.failed()
        raise StorageError(f"S3 {action}: no answer within {seconds:g} s") from exc
    availability.succeeded()
