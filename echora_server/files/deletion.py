"""Deleting stored objects; what storage refuses is retried from ``db.deletions``'s queue."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import asyncpg
import structlog

from echora_server.db import deletions
from echora_server.storage.base import Leftover, LeftoverSink, Storage

log = structlog.get_logger("echora.deletion")

DELETE_CONCURRENCY = 8


async def delete_objects(storage: Storage, keys: Sequence[str]) -> set[str]:
    limit = asyncio.Semaphore(DELETE_CONCURRENCY)

    async def delete(key: str) -> None:
        async with limit:
            await storage.delete(key)

    results = await asyncio.gather(*(delete(k) for k in keys), return_exceptions=True)
    for result in results:  # a cancellation goes up
        if isinstance(result, BaseException) and not isinstance(result, Exception):
            raise result
    failed = {key for key, r in zip(keys, results, strict=True) if isinstance(r, Exception)}
    if failed:
        first = next(r for r in results if isinstance(r, Exception))
        log.warning("object_delete_failed", objects=len(failed), error=repr(first))
    return failed


async def discard(pool: asyncpg.Pool, storage: Storage, keys: Sequence[str]) -> set[str]:
    """For objects no row will claim (a failed upload's, an orphan): queue what is refused."""
    failed = await delete_objects(storage, keys)
    if failed:
        try:
            async with pool.acquire() as conn:
                await deletions.queue_deletions(conn, sorted(failed))
        except Exception:  # the orphan sweep finds them all the same
            log.exception("deletion_queue_failed", keys=sorted(failed))
    return failed


async def delete_queued(pool: asyncpg.Pool, storage: Storage, keys: Sequence[str]) -> None:
    """For rows a committed transaction deleted (their trigger queued the objects)."""
    failed = await delete_objects(storage, keys)
    done = [key for key in keys if key not in failed]
    if not done:
        return
    try:
        async with pool.acquire() as conn:
            await deletions.dequeue_deletions(conn, done)
    except Exception:  # the sweeper deletes them again: deleting is idempotent
        log.warning("dequeue_failed", exc_info=True)


def leftover_recorder(pool: asyncpg.Pool) -> LeftoverSink:
    """What the storage calls with a failed write's leftover: queued, due at once. If the
    database is down too, the age-based passes (stale uploads, orphans) remove it later."""

    async def record(leftover: Leftover) -> None:
        try:
            async with pool.acquire() as conn:
                await deletions.queue_leftover(conn, leftover.key, leftover.upload_id)
        except Exception:
            log.exception("leftover_not_recorded", key=leftover.key, left_for="age-based pass")
        else:
            log.info("leftover_recorded", key=leftover.key, upload_id=leftover.upload_id)

    return record
