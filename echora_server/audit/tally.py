"""Busy actions counted in memory and written as one row per key and hour, every few
seconds and at shutdown: a popular file's downloads do not add a write to each download,
nor flood the log. A crash loses at most the last interval's counts."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import structlog
from aiohttp import web

from echora_server.audit.record import FILE_DOWNLOADED, TOKEN_REFUSED, origin
from echora_server.db import audit
from echora_server.db.pool import POOL

log = structlog.get_logger("echora.audit")

FLUSH_EVERY = 10.0
# Beyond this many distinct keys between flushes, new keys are dropped (and counted as such
# in the log): a flood of refused tokens from random addresses must not grow memory.
MAX_KEYS = 10_000


class Tally:
    def __init__(self, clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)) -> None:
        self._clock = clock
        self._counts: dict[str, audit.Counted] = {}
        self.dropped = 0

    def download(self, workspace_id: int, actor_id: int, attachment_id: str) -> None:
        """A file's bytes served (per file, user and hour)."""
        self._add(
            FILE_DOWNLOADED,
            workspace_id,
            actor_id,
            attachment_id,
            f"{attachment_id}:{actor_id}",
            {},
        )

    def token_refused(
        self,
        code: str,
        workspace_id: int | None = None,
        actor_id: int | None = None,
        kind: str = "api_token",
    ) -> None:
        """A credential refused (per client address, reason and hour); never the token."""
        client = origin().client_addr
        key = f"{kind}:{code}:{client}:{workspace_id}:{actor_id}"
        self._add(TOKEN_REFUSED, workspace_id, actor_id, None, key, {"reason": code, "kind": kind})

    def _add(
        self,
        action: str,
        workspace_id: int | None,
        actor_id: int | None,
        attachment_id: str | None,
        key: str,
        details: dict[str, Any],
    ) -> None:
        now = self._clock()
        hour = now.replace(minute=0, second=0, microsecond=0)
        full_key = f"{action}:{hour.isoformat()}:{key}"
        here = origin()
        count = self._counts.get(full_key)
        if count is None:
            if len(self._counts) >= MAX_KEYS:
                self.dropped += 1
                return
            self._counts[full_key] = audit.Counted(
                hour,
                now,
                workspace_id,
                actor_id,
                action,
                attachment_id,
                here.request_id,
                here.client_addr,
                details,
                1,
                full_key,
            )
        else:
            count.count += 1
            count.last_at = now
            count.request_id, count.client_addr = here.request_id, here.client_addr

    async def flush(self, pool: asyncpg.Pool) -> int:
        """Write what was counted; on failure keep it for the next flush. How many rows."""
        counts, self._counts = self._counts, {}
        if not counts:
            return 0
        rows = list(counts.values())
        try:
            async with pool.acquire() as conn:
                await audit.add_counts(conn, rows)
        except BaseException:
            for key, c in counts.items():  # back, merged with what came meanwhile
                mine = self._counts.setdefault(key, c)
                if mine is not c:
                    mine.count += c.count
            raise
        if self.dropped:
            log.warning("audit_tally_full", dropped=self.dropped)
            self.dropped = 0
        return len(rows)


TALLY = web.AppKey("audit_tally", Tally)


async def _flush_forever(tally: Tally, pool: asyncpg.Pool) -> None:
    while True:
        await asyncio.sleep(FLUSH_EVERY)
        try:
            await tally.flush(pool)
        except Exception:
            log.warning("audit_flush_failed", exc_info=True)


async def tally_ctx(app: web.Application) -> AsyncIterator[None]:
    """After the pool; its last flush runs before the pool closes."""
    tally = app[TALLY] = Tally()
    task = asyncio.create_task(_flush_forever(tally, app[POOL]))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        try:
            await tally.flush(app[POOL])
        except Exception:
            log.warning("audit_flush_failed", exc_info=True)
