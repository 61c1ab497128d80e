"""Running cleanup passes: every few minutes in each server process, or once (``echora cleanup``).
No lock elects one sweeper: passes are safe side by side (SKIP LOCKED, leases, idempotence)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
import time
from collections.abc import AsyncIterator

import asyncpg
import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from echora_server.config import CONFIG, Config
from echora_server.core.metrics import METRICS
from echora_server.db.migrations import MigrationError, migrate, status
from echora_server.db.pool import POOL, create_pool, database_dsn
from echora_server.files.cleanup import REMOVED_KINDS, SweepResult, sweep_once
from echora_server.storage.base import Storage
from echora_server.storage.factory import STORAGE, create_storage

log = structlog.get_logger("echora.sweeper")

# Factors of the interval; the first wait is shorter, so a restart sweeps soon.
JITTER = (0.8, 1.2)
FIRST_WAIT = (0.5, 1.0)


class SweepMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.removed = Counter(
            "echora_sweep_removed",
            "What cleanup sweeps removed, by kind.",
            ["kind"],
            registry=registry,
        )
        self.errors = Counter(
            "echora_sweep_errors",
            "Cleanup operations that failed (a failed sweep counts one); retried later.",
            registry=registry,
        )
        self.duration = Histogram(
            "echora_sweep_duration_seconds",
            "How long one cleanup sweep took.",
            registry=registry,
            buckets=(0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600),
        )
        self.last_success = Gauge(
            "echora_sweep_last_success_timestamp_seconds",
            "When a cleanup sweep last finished without any error (Unix time).",
            registry=registry,
        )
        for kind in REMOVED_KINDS:  # exported as 0 from the start, so rate() works
            self.removed.labels(kind)

    def record(self, result: SweepResult, duration: float) -> None:
        for kind in REMOVED_KINDS:
            self.removed.labels(kind).inc(getattr(result, kind))
        self.errors.inc(result.errors)
        self.duration.observe(duration)
        if not result.errors:
            self.last_success.set(time.time())


class Sweeper:
    def __init__(
        self, pool: asyncpg.Pool, storage: Storage, config: Config, metrics: SweepMetrics
    ) -> None:
        self._pool = pool
        self._storage = storage
        self._config = config
        self._metrics = metrics

    async def sweep(self) -> SweepResult | None:
        """A failure is logged and counted, never raised."""
        started = time.perf_counter()
        try:
            now = dt.datetime.now(dt.UTC)
            result = await sweep_once(self._pool, self._storage, self._config, now)
        except Exception:
            log.exception("sweep_failed")
            self._metrics.errors.inc()
            return None
        self._metrics.record(result, time.perf_counter() - started)
        return result

    async def run_forever(self, interval: float) -> None:
        wait = interval * random.uniform(*FIRST_WAIT)
        while True:
            await asyncio.sleep(wait)
            await self.sweep()
            wait = interval * random.uniform(*JITTER)


async def sweeper_ctx(app: web.Application) -> AsyncIterator[None]:
    """Started last, stopped first (a pass needs pool and storage); cancelling a pass is safe."""
    config = app[CONFIG]
    if config.sweep_interval <= 0:
        yield
        return
    metrics = SweepMetrics(app[METRICS].registry)
    sweeper = Sweeper(app[POOL], app[STORAGE], config, metrics)
    task = asyncio.create_task(sweeper.run_forever(config.sweep_interval), name="sweeper")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def run_cleanup(config: Config, *, dry_run: bool = False) -> SweepResult:
    """``echora cleanup``. A dry run changes nothing: it refuses a database that needs migrating."""
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
            now = dt.datetime.now(dt.UTC)
            return await sweep_once(pool, storage, config, now, dry_run=dry_run)
        finally:
            await storage.close()
    finally:
        await pool.close()
