"""Fan-out over PostgreSQL LISTEN/NOTIFY. A NOTIFY payload is limited to 8000 bytes, less than a
message with attachments may need, so an event goes to the ``events`` table and only its id is
notified; every process fetches rows by id. Events sent while the listener reconnects are not
replayed: clients fill such gaps with ``resume``."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Sequence
from typing import Any

import asyncpg
import structlog

from echora_server.db import outbox
from echora_server.realtime.events import Event
from echora_server.realtime.fanout.base import Deliver, OnLive

log = structlog.get_logger("echora.fanout")

CHANNEL = "echora_events"
# Ephemeral events ride in the notification itself (small, never stored, lost if no one hears).
EPHEMERAL_CHANNEL = "echora_ephemeral"
MAX_EPHEMERAL = 4000  # bytes; NOTIFY takes up to 8000
RECONNECT_DELAY = (0.2, 0.5, 1.0, 2.0, 5.0)
TRIM_EVERY = 60.0
KEEP_FOR_SECONDS = 600


def _ephemeral_payload(event: Event) -> str:
    payload = json.dumps(event.to_json(), separators=(",", ":"))
    if len(payload.encode()) > MAX_EPHEMERAL:
        raise ValueError(f"an ephemeral event of {len(payload)} bytes")
    return payload


class PostgresFanout:
    def __init__(self, pool: asyncpg.Pool, dsn: str) -> None:
        self._pool = pool
        self._dsn = dsn
        self._deliver: Deliver | None = None
        self._ids: asyncio.Queue[int] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._listener: asyncpg.Connection | None = None
        self._connected = asyncio.Event()
        self._on_live: OnLive | None = None
        self._ephemeral: set[asyncio.Future[None]] = set()

    async def start(self, deliver: Deliver, on_live: OnLive | None = None) -> None:
        self._deliver = deliver
        self._on_live = on_live
        self._tasks = [
            asyncio.create_task(self._listen_forever(), name="fanout-listen"),
            asyncio.create_task(self._dispatch_forever(), name="fanout-dispatch"),
            asyncio.create_task(self._trim_forever(), name="fanout-trim"),
        ]
        # Start only once listening, so nothing published after start() is missed.
        await asyncio.wait_for(self._connected.wait(), timeout=30)

    async def publish(self, event: Event) -> None:
        async with self._pool.acquire() as conn:
            await outbox.insert_and_notify(conn, CHANNEL, json.dumps(event.to_json()))

    async def publish_ephemeral(self, event: Event) -> None:
        payload = _ephemeral_payload(event)
        async with self._pool.acquire() as conn:
            await outbox.notify(conn, EPHEMERAL_CHANNEL, payload)

    async def stage_ephemeral(self, conn: asyncpg.Connection, events: Sequence[Event]) -> None:
        if events:
            payloads = [_ephemeral_payload(event) for event in events]
            await outbox.notify_all(conn, EPHEMERAL_CHANNEL, payloads)

    async def committed_ephemeral(self, events: Sequence[Event]) -> None:
        pass  # the commit sent them

    async def stage(self, conn: asyncpg.Connection, events: Sequence[Event]) -> None:
        # NOTIFY is transactional: delivered at COMMIT, dropped on rollback.
        for event in events:
            await outbox.insert_and_notify(conn, CHANNEL, json.dumps(event.to_json()))

    async def committed(self, events: Sequence[Event]) -> None:
        pass  # the commit sent them

    async def close(self) -> None:
        for task in self._ephemeral:
            task.cancel()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            # A listener that ended on a lost connection has nothing left to do at close.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []

    def _on_notify(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        with contextlib.suppress(ValueError):
            self._ids.put_nowait(int(payload))

    def _on_ephemeral(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        try:
            event = Event.from_json(json.loads(payload))
        except (ValueError, KeyError, TypeError):
            log.warning("fanout_ephemeral_malformed")
            return
        task = asyncio.ensure_future(self._deliver_ephemeral(event))
        self._ephemeral.add(task)
        task.add_done_callback(self._ephemeral.discard)

    async def _deliver_ephemeral(self, event: Event) -> None:
        if self._deliver is None:
            return
        try:
            await self._deliver(event)
        except Exception:
            log.exception("fanout_deliver_failed", type=event.type)

    async def _listen_forever(self) -> None:
        attempt = 0
        while True:
            lost = asyncio.Event()
            try:
                conn = await asyncpg.connect(self._dsn, timeout=10)
            except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                delay = RECONNECT_DELAY[min(attempt, len(RECONNECT_DELAY) - 1)]
                log.warning("fanout_listen_failed", error=str(exc), retry_in=delay)
                attempt += 1
                await asyncio.sleep(delay)
                continue
            try:
                conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
                await conn.add_listener(CHANNEL, self._on_notify)
                await conn.add_listener(EPHEMERAL_CHANNEL, self._on_ephemeral)
                self._listener = conn
                self._connected.set()
                if attempt and self._on_live is not None:
                    self._on_live(True)
                if attempt:
                    log.info("fanout_listen_restored")
                attempt = 0
                await lost.wait()
                log.warning("fanout_listen_lost")
                attempt = 1  # restored later, whether or not the first reconnect fails
                if self._on_live is not None:
                    self._on_live(False)
            finally:
                self._listener = None
                with contextlib.suppress(Exception):
                    await asyncio.shield(conn.close(timeout=2))

    async def _dispatch_forever(self) -> None:
        while True:
            ids = [await self._ids.get()]
            while not self._ids.empty():
                ids.append(self._ids.get_nowait())
            try:
                async with self._pool.acquire() as conn:
                    bodies = await outbox.select_event_bodies(conn, ids)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                log.warning("fanout_fetch_failed", count=len(ids), exc_info=True)
                continue
            for body in bodies:
                if self._deliver is not None:
                    try:
                        await self._deliver(Event.from_json(json.loads(body)))
                    except Exception:
                        log.exception("fanout_deliver_failed")

    async def _trim_forever(self) -> None:
        while True:
            await asyncio.sleep(TRIM_EVERY)
            try:
                async with self._pool.acquire() as conn:
                    await outbox.delete_events_older_than(conn, KEEP_FOR_SECONDS)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                log.warning("fanout_trim_failed", exc_info=True)
