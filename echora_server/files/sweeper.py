"""Running the sweeper: every few minutes inside the server, or once from ``echora cleanup``.

Every server process runs its own loop (``ECHORA_SWEEP_INTERVAL_SECONDS``; 0 turns it
off in that process). No lock elects a single sweeper: a pass is safe alongside another
(``SKIP LOCKED`` claims, leases, idempotent deletes), and an advisory lock would pin a
database connection for the whole pass while storage is listed. The cost of running
several is repeated bucket listings, spread apart by jitter; operators who mind it keep
the interval on one process only.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
import time
from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from echora_server.config import Config
from echora_server.core.metrics import Metrics
from echora_server.db.migrations import MigrationError, migrate, status
from echora_server.db.pool import create_pool, database_dsn
from echora_server.files import cleanup as sweeper
from echora_server.files.cleanup import SweepResult
from echora_server.keys import CONFIG, METRICS, POOL, STORAGE
from echora_server.storage import create_storage

log = structlog.get_logger("echora.sweeper")

# Each wait is the interval times a factor drawn from here, so processes started together
# drift apart; the first wait is shorter (a restart sweeps soon) but still spread.
JITTER = (0.8, 1.2)
FIRST_WAIT = (0.5, 1.0)


def record(metrics: Metrics, result: SweepResult, duration: float) -> None:
    for kind in sweeper.REMOVED_KINDS:
        metrics.sweep_removed.labels(kind).inc(getattr(result, kind))
    metrics.sweep_errors.inc(result.errors)
    metrics.sweep_duration.observe(duration)
    if not result.errors:
        metrics.sweep_last_success.set(time.time())


async def sweep_and_record(app: web.Application) -> SweepResult | None:
    """One pass at the current time; a failure is logged and counted, never raised."""
    metrics = app[METRICS]
    started = time.perf_counter()
    try:
        result = await sweeper.sweep_once(
            app[POOL], app[STORAGE], app[CONFIG], dt.datetime.now(dt.UTC)
        )
    except Exception:
        log.exception("sweep_failed")
        metrics.sweep_errors.inc()
        return None
    record(metrics, result, time.perf_counter() - started)
    return result


async def _sweep_forever(app: web.Application, interval: float) -> None:
    wait = interval * random.uniform(*FIRST_WAIT)
    while True:
        await asyncio.sleep(wait)
        await sweep_and_record(app)
        wait = interval * random.uniform(*JITTER)


async def sweeper_ctx(app: web.Application) -> AsyncIterator[None]:
    """The background sweeper (started last, stopped first: it needs pool and storage).
    Stopping cancels a pass in progress, which is safe: every step can be rerun."""
    interval = app[CONFIG].sweep_interval_seconds
    if interval <= 0:
        yield
        return
    metrics = app[METRICS]
    for kind in sweeper.REMOVED_KINDS:  # exported as 0 from the start, so rate() works
        metrics.sweep_removed.labels(kind)
    task = asyncio.create_task(_sweep_forever(app, interval), name="sweeper")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def run_cleanup(config: Config, *, dry_run: bool = False) -> SweepResult:
    """One pass for ``echora cleanup``, with its own pool and storage client. A dry run
    changes nothing, not even the schema: it refuses a database that needs migrating."""
    pool = await create_pool(config.model_copy(update={"db_pool_min": 0}), database_dsn(config))
    try:
        async with pool.acquire() as conn:
            if not dry_run:
                await migrate(conn)
            elif not (await status(conn)).current:
                raise MigrationError("the database needs migrating first: run `echora migrate`")
        storage = create_storage(config)
        await storage.start()
        try:
            return await sweeper.sweep_once(
                pool, storage, config, dt.datetime.now(dt.UTC), dry_run=dry_run
            )
        finally:
            await storage.close()
    finally:
        await pool.close()
