"""The push dispatcher: one per server process. Each push-mode bot's entries go to its
callback URL in order, one in flight per bot (its oldest unacknowledged live entry); a 2xx
acknowledges it, anything else is retried on the schedule until the entry expires, a 410
disables the callback. State is in the database, so delivery survives a restart, and a
claim is a lease (``db.push``), so with several processes exactly one sends each attempt."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Sequence

import aiohttp
import asyncpg
import structlog
from aiohttp import web

from echora_server.agents import outbound
from echora_server.agents.webhooks import message_id, webhook_headers
from echora_server.config import CONFIG
from echora_server.core.batching import Batcher
from echora_server.core.metrics import METRICS, Metrics
from echora_server.db import push
from echora_server.db.pool import POOL
from echora_server.db.records import PushClaim
from echora_server.realtime.bus import BUS
from echora_server.realtime.events import INBOX_STAGED, Event

log = structlog.get_logger("echora.push")

# After the first attempt (at once): 5 s, 5 min, 30 min, 2 h, 5 h, then every 10 h.
RETRY_DELAYS: tuple[float, ...] = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0)
# A claim outlives the attempt's timeout by this much: a sender that dies mid-attempt
# leaves the entry due again then.
LEASE_MARGIN = 5.0
# With nothing woken, the heads are looked at this often (leases run out, callbacks are
# turned back on, other processes' retries fall due).
SCAN_INTERVAL = 5.0
MAX_SENDING = 64


def attempt_body(claim: PushClaim) -> bytes:
    """``{"type", "timestamp", "data"}``: the entry's type, creation time and body."""
    type_, stamp = json.dumps(claim.type), json.dumps(claim.created_at.isoformat())
    return f'{{"type":{type_},"timestamp":{stamp},"data":{claim.body}}}'.encode()


class PushDispatcher:
    def __init__(
        self,
        pool: asyncpg.Pool,
        session: aiohttp.ClientSession,
        metrics: Metrics,
        *,
        timeout: float,
        allow_private: bool,
        retry_delays: Sequence[float] = RETRY_DELAYS,
        scan_interval: float = SCAN_INTERVAL,
    ) -> None:
        self._pool = pool
        self._session = session
        self._metrics = metrics
        self.timeout = timeout
        self.allow_private = allow_private
        self.retry_delays = tuple(retry_delays)  # tests shorten it
        self.scan_interval = scan_interval
        self._wake = asyncio.Event()
        self._push_bots: set[int] = set()
        # Bots that events named and a scan found not pushing (poll bots, disabled ones):
        # their events wake no scan. One set to push later is found by the periodic scan.
        self._not_push: set[int] = set()
        self._unknown: set[int] = set()
        self._draining: dict[int, asyncio.Task[None]] = {}
        self._again: set[int] = set()
        self._sending = asyncio.Semaphore(MAX_SENDING)
        # The heads one event makes due are claimed, and their deliveries recorded, in one
        # statement each rather than one per bot.
        self._claims: Batcher[int, float, PushClaim | None] = Batcher(
            self._claim, None, unclaimed=self._release_unsent
        )
        self._delivered: Batcher[int, PushClaim, None] = Batcher(self._record_delivered, None)

    def retry_delay(self, attempt: int) -> float:
        """Seconds from a failed attempt ``attempt`` (from 1) to the next."""
        return self.retry_delays[min(attempt, len(self.retry_delays)) - 1]

    async def on_event(self, event: Event) -> None:
        """An entry was committed (in any process): its bot's head may be due now."""
        if event.type != INBOX_STAGED:
            return
        for bot_id in event.data.get("bot_ids", ()):
            if bot_id in self._push_bots:
                self._drain_soon(bot_id)
            elif bot_id not in self._not_push:  # a new bot: the next scan tells
                self._unknown.add(bot_id)
                self._wake.set()

    async def run(self) -> None:
        while True:
            self._wake.clear()
            wait = self.scan_interval
            unknown, self._unknown = self._unknown, set()
            try:
                async with self._pool.acquire() as conn:
                    heads = await push.select_heads(conn)
            except Exception:  # the database is away: look again later
                log.exception("push_scan_failed")
                heads = []
            else:
                self._push_bots = {bot_id for bot_id, _ in heads}
                self._not_push = (self._not_push | unknown) - self._push_bots
            for bot_id, due_in in heads:
                if due_in is None:
                    continue
                if due_in <= 0:
                    self._drain_soon(bot_id)
                else:
                    wait = min(wait, due_in)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    def _drain_soon(self, bot_id: int) -> None:
        if bot_id in self._draining:
            self._again.add(bot_id)  # look once more when the current attempt is over
            return
        self._draining[bot_id] = asyncio.create_task(self._drain(bot_id), name=f"push-{bot_id}")

    async def _drain(self, bot_id: int) -> None:
        """Send the bot's head while one is due: on success the next entry follows at once."""
        try:
            while True:
                self._again.discard(bot_id)
                # The lease starts at the claim: no waiting for a sending slot after it.
                async with self._sending:
                    claim = await self._claims(bot_id, self.timeout + LEASE_MARGIN)
                    if claim is not None:
                        await self._attempt(claim)
                if claim is None:
                    if bot_id in self._again:
                        continue
                    return
        except Exception:
            log.exception("push_drain_failed", bot_id=bot_id)
        finally:
            self._draining.pop(bot_id, None)

    async def _attempt(self, claim: PushClaim) -> None:
        body = attempt_body(claim)
        msg_id = message_id(claim.bot_id, claim.entry_id)
        headers = webhook_headers(claim.secrets, msg_id, int(time.time()), body)
        headers["echora-attempt"] = str(claim.attempt)
        started = time.monotonic()
        try:
            outcome = await outbound.post(
                self._session,
                claim.callback_url,
                body,
                headers,
                seconds=self.timeout,
                allow_private=self.allow_private,
            )
        except asyncio.CancelledError:  # shutting down: due again at once, for any process
            await asyncio.shield(self._release(claim))
            raise
        await self._settle(claim, outcome, time.monotonic() - started)

    async def _settle(self, claim: PushClaim, outcome: outbound.Outcome, took: float) -> None:
        where = {
            "workspace_id": claim.workspace_id,
            "bot_id": claim.bot_id,
            "entry_id": claim.entry_id,
            "attempt": claim.attempt,
            "ms": round(took * 1000, 1),
        }
        if outcome.error is None:
            await self._delivered(claim.bot_id, claim)
            self._metrics.push_attempts.labels("delivered").inc()
            log.info("push_delivered", status=outcome.status, **where)
            return
        async with self._pool.acquire() as conn:
            disable = outcome.status == 410
            retry_in = self.retry_delay(claim.attempt)
            if outcome.retry_after is not None:
                retry_in = max(retry_in, outcome.retry_after)
            await push.mark_failed(conn, claim, retry_in, outcome.error, disable=disable)
        if disable:
            self._metrics.push_attempts.labels("disabled").inc()
            log.warning("push_disabled", reason=outcome.error, **where)
            return
        refused = outcome.error == "address_refused"
        self._metrics.push_attempts.labels("refused" if refused else "failed").inc()
        log.warning(
            "push_failed",
            reason=outcome.error,
            status=outcome.status,
            retry_in=retry_in,
            expires_at=claim.expires_at.isoformat(),
            **where,
        )

    async def _claim(self, asked: dict[int, float]) -> dict[int, PushClaim]:
        async with self._pool.acquire() as conn:
            return await push.claim_heads(conn, list(asked), max(asked.values()))

    async def _record_delivered(self, claims: dict[int, PushClaim]) -> dict[int, None]:
        async with self._pool.acquire() as conn:
            await push.mark_delivered(conn, list(claims.values()))
        return {}

    async def _release_unsent(self, claim: PushClaim | None) -> None:
        if claim is not None:
            await self._release(claim)

    async def _release(self, claim: PushClaim) -> None:
        with contextlib.suppress(Exception):
            async with self._pool.acquire() as conn:
                await push.release(conn, claim)

    async def stop(self) -> None:
        tasks = list(self._draining.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._claims.close()
        await self._delivered.close()


PUSH = web.AppKey("push", PushDispatcher)


async def push_ctx(app: web.Application) -> AsyncIterator[None]:
    """After the pool and the bus; stopped before them (an attempt cut short is released)."""
    config = app[CONFIG]
    session = outbound.new_session(
        config.webhook_timeout, allow_private=config.webhook_allow_private
    )
    dispatcher = PushDispatcher(
        app[POOL],
        session,
        app[METRICS],
        timeout=config.webhook_timeout,
        allow_private=config.webhook_allow_private,
    )
    app[PUSH] = dispatcher
    app[BUS].add_listener(dispatcher.on_event)
    task = asyncio.create_task(dispatcher.run(), name="push-dispatcher")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await dispatcher.stop()
        await session.close()
