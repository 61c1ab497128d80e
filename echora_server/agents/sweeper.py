"""The inbox sweep: entries past ``expires_at`` are deleted whatever their state (a hard TTL
from creation, so a stuck entry cannot live forever). Run by each server process on the
cleanup interval; passes are safe side by side (small batches, SKIP LOCKED)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import structlog
from aiohttp import web
from prometheus_client import Counter

from echora_server.config import CONFIG
from echora_server.core.metrics import METRICS
from echora_server.db import inbox
from echora_server.db.pool import POOL
from echora_server.files.sweeper import FIRST_WAIT, JITTER

log = structlog.get_logger("echora.inbox")

BATCH = 500


@dataclass(frozen=True, slots=True)
class InboxSweepResult:
    expired: int = 0


async def sweep_once(pool: asyncpg.Pool, now: dt.datetime) -> InboxSweepResult:
    """Delete every entry expired at ``now`` (timezone-aware), a batch per statement."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    expired = 0
    while True:
        async with pool.acquire() as conn:
            deleted = await inbox.delete_expired(conn, now, BATCH)
        expired += deleted
        if deleted < BATCH:
            break
    if expired:
        log.info("inbox_expired", expired=expired)
    return InboxSweepResult(expired)


async def run_forever(pool: asyncpg.Pool, interval: float, counter: Counter) -> None:
    wait = interval * random.uniform(*FIRST_WAIT)
    while True:
        await asyncio.sleep(wait)
        try:
            result = await sweep_once(pool, dt.datetime.now(dt.UTC))
        except Exception:  # one failed pass is logged; the next one retries
            log.exception("inbox_sweep_failed")
        else:
            counter.labels("expired").inc(result.expired)
        wait = interval * random.uniform(*JITTER)


async def inbox_sweeper_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    if config.sweep_interval <= 0:
        yield
        return
    counter = Counter(
        "echora_inbox_swept",
        "Inbox entries the sweep deleted, by why.",
        ["kind"],
        registry=app[METRICS].registry,
    )
    counter.labels("expired")
    task = asyncio.create_task(
        run_forever(app[POOL], config.sweep_interval, counter), name="inbox-sweeper"
    )
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
