"""A bot's inbox: poll (long-polling, leasing what it returns) and acknowledge. Entries are
delivered at least once: one not acknowledged within its lease is returned again, and an
acknowledged or expired one never is. No connection is held while a poll waits."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator, Sequence

import asyncpg
import structlog
from aiohttp import web
from prometheus_client import Counter

from echora_server.agents.staging import InboxSink
from echora_server.auth.identity import Identity
from echora_server.config import CONFIG
from echora_server.core.batching import Batcher
from echora_server.core.errors import Forbidden, NotFound
from echora_server.core.metrics import METRICS
from echora_server.db import bots, inbox
from echora_server.db.pool import POOL
from echora_server.db.records import InboxEntry
from echora_server.realtime.bus import BUS
from echora_server.realtime.events import INBOX_STAGED, Event

log = structlog.get_logger("echora.inbox")

MAX_WAIT = 30
MAX_BATCH = 100
Clock = Callable[[], dt.datetime]


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class InboxWaiters:
    """The long polls waiting in this process, by bot; woken by the fan-out's INBOX_STAGED."""

    def __init__(self) -> None:
        self._waiting: defaultdict[int, set[asyncio.Event]] = defaultdict(set)

    @contextlib.contextmanager
    def watch(self, bot_id: int) -> Iterator[asyncio.Event]:
        woken = asyncio.Event()
        self._waiting[bot_id].add(woken)
        try:
            yield woken
        finally:
            waiting = self._waiting.get(bot_id)
            if waiting is not None:
                waiting.discard(woken)
                if not waiting:
                    del self._waiting[bot_id]

    async def on_event(self, event: Event) -> None:
        if event.type != INBOX_STAGED:
            return
        for bot_id in event.data.get("bot_ids", ()):
            for woken in self._waiting.get(bot_id, ()):
                woken.set()


class InboxService:
    def __init__(
        self,
        pool: asyncpg.Pool,
        waiters: InboxWaiters,
        lease_seconds: float,
        clock: Clock = utc_now,
        transitions: Counter | None = None,
    ) -> None:
        self._pool = pool
        self._waiters = waiters
        self.lease_seconds = lease_seconds
        self._clock = clock
        self._transitions = transitions
        # A bot's account and workspace never change (a deleted bot's token no longer
        # authenticates), so its lookup is kept; bounded by clearing when full.
        self._bots: dict[int, tuple[int, int]] = {}
        # The polls one staged event wakes lease in one statement.
        self._leases: Batcher[int, int, list[InboxEntry]] = Batcher(self._lease, [])
        self._lease_ends: Batcher[int, dt.datetime, dt.datetime | None] = Batcher(
            self._lease_end, None
        )

    def _count(self, transition: str, n: int) -> None:
        if self._transitions is not None and n:
            self._transitions.labels(transition).inc(n)

    async def poll(self, identity: Identity, limit: int, wait: float) -> list[InboxEntry]:
        """The oldest visible entries (at most ``limit``), leased; waits up to ``wait``
        seconds for one when there are none."""
        bot_id, workspace_id = await self._bot(identity)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(wait, MAX_WAIT)
        # Watching before each look: an entry staged during the query still wakes us.
        with self._waiters.watch(bot_id) as woken:
            while True:
                woken.clear()
                entries = await self._leases(bot_id, limit)
                remaining = deadline - loop.time()
                if entries or remaining <= 0:
                    break
                now = self._clock()
                lease_end = await self._lease_ends(bot_id, now)
                if lease_end is not None:  # a lease running out makes its entry visible
                    remaining = min(remaining, (lease_end - now).total_seconds())
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(remaining, 0.0)):
                        await woken.wait()
        for entry in entries:
            log.info(
                "inbox_leased",
                workspace_id=workspace_id,
                bot_id=bot_id,
                entry_id=entry.id,
                type=entry.type,
                attempts=entry.attempts,
            )
        self._count("leased", len(entries))
        return entries

    async def _lease(self, limits: dict[int, int]) -> dict[int, list[InboxEntry]]:
        async with self._pool.acquire() as conn:
            return await inbox.lease_entries_of_bots(
                conn, limits, self._clock(), self.lease_seconds
            )

    async def _lease_end(self, asked: dict[int, dt.datetime]) -> dict[int, dt.datetime | None]:
        async with self._pool.acquire() as conn:
            return dict(await inbox.next_lease_ends(conn, list(asked), min(asked.values())))

    async def close(self) -> None:
        await self._leases.close()
        await self._lease_ends.close()

    async def ack(self, identity: Identity, ids: Sequence[int]) -> list[int]:
        """All or nothing: any id that is no live entry of this bot is 404 and nothing changes.
        Acknowledging twice is fine."""
        bot_id, workspace_id = await self._bot(identity)
        async with self._pool.acquire() as conn:
            missing = await inbox.ack_entries(conn, bot_id, ids, self._clock())
        if missing:
            raise NotFound(
                "No such inbox entry (unknown, expired or not yours); nothing was acknowledged.",
                code="entry_not_found",
                details={"ids": sorted(missing)},
            )
        acked = sorted(set(ids))
        for entry_id in acked:
            log.info(
                "inbox_acknowledged", workspace_id=workspace_id, bot_id=bot_id, entry_id=entry_id
            )
        self._count("acknowledged", len(acked))
        return acked

    async def entry(self, identity: Identity, entry_id: int) -> InboxEntry:
        """One live entry, acknowledged or not (an agent that crashed after acknowledging
        re-reads it); reading it leases nothing."""
        bot_id, _ = await self._bot(identity)
        async with self._pool.acquire() as conn:
            found = await inbox.select_entry(conn, bot_id, entry_id, self._clock())
        if found is None:
            raise NotFound(
                "No such inbox entry (unknown, expired or not yours).", code="entry_not_found"
            )
        return found

    async def _bot(self, identity: Identity) -> tuple[int, int]:
        """The caller's bot id and workspace; 403 for anyone but a bot."""
        found = self._bots.get(identity.user.id)
        if found is None:
            async with self._pool.acquire() as conn:
                bot = await bots.select_bot(conn, identity.user.id)
            if bot is not None:
                if len(self._bots) >= 10_000:
                    self._bots.clear()
                found = self._bots[identity.user.id] = (bot.user.id, bot.workspace_id)
        if found is None or not identity.may_use_workspace(found[1]):
            raise Forbidden("Only bot accounts have an inbox.", code="bot_only")
        return found


INBOX = web.AppKey("inbox", InboxService)


async def inbox_ctx(app: web.Application) -> AsyncIterator[None]:
    """After the bus, before any service that writes: every write then stages entries."""
    config = app[CONFIG]
    waiters = InboxWaiters()
    transitions = app[METRICS].inbox_transitions
    app[BUS].add_sink(InboxSink(config.inbox_ttl, transitions.labels("staged")))
    app[BUS].add_listener(waiters.on_event)
    app[INBOX] = service = InboxService(
        app[POOL], waiters, config.inbox_lease, transitions=transitions
    )
    yield
    await service.close()
