"""The inbox sweep: entries past ``expires_at`` are deleted whatever their state (a hard TTL
from creation, so a stuck entry cannot live forever), and acknowledged ones once they are
``ECHORA_INBOX_ACK_RETENTION`` old (a crashed agent may still re-read what it acknowledged).
Run by each server process on the cleanup interval; passes are safe side by side (small
batches, SKIP LOCKED)."""

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
from prometheus_client import Counter, Gauge

from echora_server.config import CONFIG
from echora_server.core.metrics import METRICS
from echora_server.db import inbox
from echora_server.db.pool import POOL
from echora_server.files.sweeper import FIRST_WAIT, JITTER

log = structlog.get_logger("echora.inbox")

BATCH = 500


@dataclass(frozen=True, slots=True)
class InboxSweepResult:
    acknowledged: int = 0  # past the retention after their acknowledgement
    expired_unfetched: int = 0  # expired, never acknowledged, no file of theirs fetched
    expired_fetched: int = 0  # expired unacknowledged, though the bot fetched a file

    @property
    def expired(self) -> int:
        return self.expired_unfetched + self.expired_fetched

    def counts(self) -> dict[str, int]:
        return {
            "acknowledged": self.acknowledged,
            "expired_unfetched": self.expired_unfetched,
            "expired_fetched": self.expired_fetched,
        }


async def sweep_once(
    pool: asyncpg.Pool, now: dt.datetime, ack_retention: float = 3600.0
) -> InboxSweepResult:
    """Delete every entry expired at ``now`` (timezone-aware), and every one acknowledged
    more than ``ack_retention`` seconds before it; a batch per statement, one log line."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    acked_before = now - dt.timedelta(seconds=ack_retention)
    totals = {"acknowledged": 0, "expired_unfetched": 0, "expired_fetched": 0}
    while True:
        async with pool.acquire() as conn:
            gone = await inbox.delete_done(conn, now, acked_before, BATCH)
        for entry in gone:
            if entry.acknowledged:
                totals["acknowledged"] += 1
                continue
            totals["expired_fetched" if entry.fetched else "expired_unfetched"] += 1
            log.info(
                "inbox_expired",
                workspace_id=entry.workspace_id,
                bot_id=entry.bot_id,
                entry_id=entry.entry_id,
                type=entry.type,
                file_ids=entry.attachment_ids,
                fetched=entry.fetched,
            )
        if len(gone) < BATCH:
            break
    result = InboxSweepResult(**totals)
    if any(totals.values()):
        log.info("inbox_swept", **totals)
    return result


@dataclass(frozen=True, slots=True)
class InboxMetrics:
    swept: Counter
    pending: Gauge


async def run_forever(
    pool: asyncpg.Pool, interval: float, ack_retention: float, metrics: InboxMetrics
) -> None:
    wait = interval * random.uniform(*FIRST_WAIT)
    while True:
        await asyncio.sleep(wait)
        try:
            now = dt.datetime.now(dt.UTC)
            result = await sweep_once(pool, now, ack_retention)
            async with pool.acquire() as conn:
                metrics.pending.set(await inbox.count_pending(conn, now))
        except Exception:  # one failed pass is logged; the next one retries
            log.exception("inbox_sweep_failed")
        else:
            for kind, count in result.counts().items():
                metrics.swept.labels(kind).inc(count)
        wait = interval * random.uniform(*JITTER)


async def inbox_sweeper_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    if config.sweep_interval <= 0:
        yield
        return
    registry = app[METRICS].registry
    metrics = InboxMetrics(
        Counter(
            "echora_inbox_swept",
            "Inbox entries the sweep deleted: acknowledged (past the retention), "
            "expired_unfetched, expired_fetched.",
            ["kind"],
            registry=registry,
        ),
        Gauge(
            "echora_inbox_pending",
            "Live inbox entries not acknowledged yet, all bots (as of the last sweep).",
            registry=registry,
        ),
    )
    for kind in InboxSweepResult().counts():
        metrics.swept.labels(kind)
    task = asyncio.create_task(
        run_forever(app[POOL], config.sweep_interval, config.inbox_ack_retention, metrics),
        name="inbox-sweeper",
    )
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
