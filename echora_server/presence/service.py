"""Presence across every server process (docs/architecture.md, "Presence").

Each process keeps what its own sockets say (``presence.local``) and writes a user's line
when it changes: one batch at a time, in a transaction that settles the user's status in
PostgreSQL and carries the changes in a NOTIFY (``EventBus.ephemeral_transaction``), so
every process hears them in commit order. Each process renews a lease (its heartbeat) and
sweeps the leases that ran out, so a process that died takes its users offline. Sockets that
asked for presence (``/api/ws?presence=1``) get a snapshot in ``hello`` and then
``presence.updated`` frames for the members of their workspaces, at most one per user per
``ECHORA_PRESENCE_INTERVAL`` (``presence.throttle``)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Coroutine, Iterable, Sequence
from typing import Any

import asyncpg
import structlog
from aiohttp import web

from echora_server.config import CONFIG
from echora_server.core.errors import unavailable
from echora_server.db import presence as db
from echora_server.db.pool import POOL
from echora_server.db.presence import Change, LeaseLost, Status
from echora_server.presence.local import Here, LocalSockets
from echora_server.presence.throttle import Throttle
from echora_server.realtime.bus import BUS, EventBus
from echora_server.realtime.events import (
    CHANNEL_MEMBER_ADDED,
    NO_WORKSPACE,
    PRESENCE_CHANGED,
    WORKSPACE_MEMBER_REMOVED,
    Event,
)
from echora_server.realtime.frames import text_frame
from echora_server.realtime.hub import HUB, Hub, Subscriber

log = structlog.get_logger("echora.presence")

# Between two writes of this process: a client flipping idle and back costs little.
WRITE_GAP = 0.05
MAX_BATCH = 500
RETRY_AFTER = 1.0
# A user's workspace ids travel with a change up to this many; beyond, each process
# looks them up (a NOTIFY carries 8000 bytes at most).
MAX_CARRIED_WORKSPACES = 100
MAX_CHANGES_BYTES = 3000
STOP_TIMEOUT = 5.0

Snapshot = list[dict[str, Any]]


def _frame(body: dict[str, Any]) -> bytes:
    return text_frame(json.dumps(body, separators=(",", ":")).encode())


def snapshot_json(statuses: dict[int, Status]) -> Snapshot:
    return [{"user_id": user_id, "status": statuses[user_id]} for user_id in sorted(statuses)]


def change_events(changes: Sequence[Change]) -> list[Event]:
    """The changes as internal events, each small enough for one NOTIFY."""
    events: list[Event] = []
    batch: list[list[Any]] = []
    size = 0
    for change in changes:
        carried = list(change.workspace_ids)
        item = [
            change.user_id,
            change.status,
            carried if len(carried) <= MAX_CARRIED_WORKSPACES else None,
        ]
        cost = len(json.dumps(item)) + 1
        if batch and size + cost > MAX_CHANGES_BYTES:
            events.append(Event(PRESENCE_CHANGED, NO_WORKSPACE, None, {"changes": batch}))
            batch, size = [], 0
        batch.append(item)
        size += cost
    if batch:
        events.append(Event(PRESENCE_CHANGED, NO_WORKSPACE, None, {"changes": batch}))
    return events


def _away(here: Here) -> bool | None:
    return None if here is None else here == "away"


class PresenceService:
    def __init__(
        self,
        pool: asyncpg.Pool,
        bus: EventBus,
        hub: Hub,
        *,
        grace: float,
        lease: float,
        interval: float,
    ) -> None:
        self._pool = pool
        self._bus = bus
        self._hub = hub
        self.grace = grace
        self.lease = lease
        self.process_id = uuid.uuid4()
        self._local = LocalSockets()
        self._dirty: set[int] = set()
        self._wake = asyncio.Event()
        self._timers: set[asyncio.TimerHandle] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._side: set[asyncio.Task[None]] = set()
        self._renewing = asyncio.Lock()
        self._stopped = True
        # Sockets that asked for presence, and the workspaces they hear of.
        self._watchers: dict[Subscriber, set[int]] = {}
        self._by_workspace: defaultdict[int, set[Subscriber]] = defaultdict(set)
        self._watchers_of: defaultdict[int, set[Subscriber]] = defaultdict(set)
        self._throttle: Throttle[int, tuple[Status, list[int] | None]] = Throttle(
            interval, self._announce
        )

    # ----- lifecycle -----

    async def start(self) -> None:
        async with self._pool.acquire() as conn:
            await db.register(conn, self.process_id, self.lease)
        self._stopped = False
        self._bus.add_listener(self.on_event)
        self._bus.add_live_listener(self._on_live)
        self._tasks = [
            asyncio.create_task(self._write_forever(), name="presence-write"),
            asyncio.create_task(self._heartbeat_forever(), name="presence-heartbeat"),
        ]

    async def stop(self) -> None:
        """The users of this process's sockets stay as they are for the grace (their clients
        reconnect to another process meanwhile); then another process's sweep settles them."""
        self._stopped = True
        for task in (*self._tasks, *self._side):
            task.cancel()
        await asyncio.gather(*self._tasks, *self._side, return_exceptions=True)
        self._tasks = []
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        self._throttle.close()
        try:
            async with asyncio.timeout(STOP_TIMEOUT), self._pool.acquire() as conn:
                await db.linger(conn, self.process_id, self.grace)
        except Exception as exc:  # the lease runs out by itself
            log.warning("presence_stop_failed", error=repr(exc))

    # ----- this process's sockets -----

    def connected(self, subscriber: Subscriber) -> None:
        """A socket is up (every socket counts, whether or not it watches presence)."""
        if self._local.add(subscriber.user_id, subscriber):
            self._mark(subscriber.user_id)

    def set_away(self, subscriber: Subscriber, away: bool) -> None:
        if self._local.set_away(subscriber.user_id, subscriber, away):
            self._mark(subscriber.user_id)

    def disconnected(self, subscriber: Subscriber) -> None:
        self._unwatch(subscriber)
        user_id = subscriber.user_id
        away = self._local.remove(user_id, subscriber)
        if away is None:
            return
        if self.grace <= 0 or self._stopped:
            self._linger_over(user_id, away)
            return
        timer: list[asyncio.TimerHandle] = []

        def over() -> None:
            self._timers.discard(timer[0])
            self._linger_over(user_id, away)

        timer.append(asyncio.get_running_loop().call_later(self.grace, over))
        self._timers.add(timer[0])

    def _linger_over(self, user_id: int, away: bool) -> None:
        if self._local.linger_over(user_id, away):
            self._mark(user_id)

    def local_status(self, user_id: int) -> Here:
        return self._local.status(user_id)

    # ----- writing -----

    def _mark(self, user_id: int) -> None:
        if not self._stopped:
            self._dirty.add(user_id)
            self._wake.set()

    async def _write_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._dirty:
                batch = sorted(self._dirty)[:MAX_BATCH]
                self._dirty.difference_update(batch)
                process_id = self.process_id
                try:
                    await self._write(process_id, batch)
                except LeaseLost:
                    self._dirty.update(batch)
                    await self._guard(self._start_again(process_id), "presence_restart_failed")
                except Exception as exc:
                    self._dirty.update(batch)
                    _log_failure("presence_write_failed", exc)
                    await asyncio.sleep(RETRY_AFTER)
                await asyncio.sleep(WRITE_GAP)

    async def _write(self, process_id: uuid.UUID, batch: list[int]) -> None:
        away = [_away(self._local.status(user_id)) for user_id in batch]
        async with self._pool.acquire() as conn, self._bus.ephemeral_transaction(conn) as events:
            changes = await db.write(conn, process_id, batch, away)
            events += change_events(changes)

    async def _start_again(self, lost: uuid.UUID) -> None:
        """The lease ran out (the database was out of reach, or this process froze): its rows
        may be swept already, so it registers under a new id and writes every user again."""
        async with self._renewing:
            if self.process_id != lost:
                return  # done already, by the other loop
            fresh = uuid.uuid4()
            async with self._pool.acquire() as conn:
                await db.register(conn, fresh, self.lease)
            self.process_id = fresh
            log.warning("presence_lease_lost", users=len(self._local.users()))
            for user_id in self._local.users():
                self._mark(user_id)

    async def _heartbeat_forever(self) -> None:
        while True:
            await self._guard(self._heartbeat(), "presence_heartbeat_failed")
            await asyncio.sleep(self.lease / 3)

    async def _heartbeat(self) -> None:
        process_id = self.process_id
        async with self._pool.acquire() as conn:
            held = await db.renew(conn, process_id, self.lease)
            if held:
                async with self._bus.ephemeral_transaction(conn) as events:
                    events += change_events(await db.sweep(conn))
        if not held:
            await self._start_again(process_id)

    @staticmethod
    async def _guard(work: Coroutine[Any, Any, None], what: str) -> None:
        try:
            await work
        except Exception as exc:
            _log_failure(what, exc)

    # ----- watching -----

    async def watch(self, subscriber: Subscriber) -> Snapshot:
        """From now on the socket hears of its workspaces' members; what they are now. The
        socket is registered before the snapshot is read, so no change falls in between
        (one may arrive twice: a status is the same again)."""
        identity = subscriber.identity
        async with self._pool.acquire() as conn:
            workspaces = await db.select_workspace_ids(
                conn, identity.user.id, identity.token_workspace_id
            )
            self._watch(subscriber, set(workspaces) - subscriber.removed_workspaces)
            found = await db.select_snapshot(conn, sorted(self._watchers.get(subscriber, ())))
        return snapshot_json(_merge(found, self._watchers.get(subscriber, ())))

    def _watch(self, subscriber: Subscriber, workspaces: Iterable[int]) -> None:
        mine = self._watchers.setdefault(subscriber, set())
        self._watchers_of[subscriber.user_id].add(subscriber)
        for workspace_id in workspaces:
            mine.add(workspace_id)
            self._by_workspace[workspace_id].add(subscriber)

    def _unwatch(self, subscriber: Subscriber) -> None:
        workspaces = self._watchers.pop(subscriber, None)
        if workspaces is None:
            return
        _discard(self._watchers_of, subscriber.user_id, subscriber)
        for workspace_id in workspaces:
            _discard(self._by_workspace, workspace_id, subscriber)

    def _unwatch_workspace(self, subscriber: Subscriber, workspace_id: int) -> None:
        workspaces = self._watchers.get(subscriber)
        if workspaces is not None and workspace_id in workspaces:
            workspaces.discard(workspace_id)
            _discard(self._by_workspace, workspace_id, subscriber)

    async def on_event(self, event: Event) -> None:
        """A bus listener: every event the fan-out brings this process."""
        if self._stopped:
            return
        if event.type == PRESENCE_CHANGED:
            for user_id, status, workspaces in event.data["changes"]:
                self._throttle.push(user_id, (status, workspaces))
        elif event.type == WORKSPACE_MEMBER_REMOVED and event.user_id is not None:
            for subscriber in tuple(self._watchers_of.get(event.user_id, ())):
                self._unwatch_workspace(subscriber, event.workspace_id)
        elif event.type == CHANNEL_MEMBER_ADDED and event.user_id is not None:
            # In a channel of a workspace the socket did not hear of: added to it since.
            joined = [
                subscriber
                for subscriber in self._watchers_of.get(event.user_id, ())
                if event.workspace_id not in self._watchers[subscriber]
                and subscriber.identity.may_use_workspace(event.workspace_id)
            ]
            for subscriber in joined:
                self._watch(subscriber, (event.workspace_id,))
            if joined:
                self._spawn(self._send_snapshots(joined))

    def _on_live(self, live: bool) -> None:
        # Changes may have been missed while the listener was away: everyone gets it again.
        if live and self._watchers and not self._stopped:
            self._spawn(self._send_snapshots(list(self._watchers)))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(self._guard(work, "presence_snapshot_failed"))
        self._side.add(task)
        task.add_done_callback(self._side.discard)

    async def _send_snapshots(self, subscribers: list[Subscriber]) -> None:
        """A ``presence.snapshot`` for each (read after they were registered, sent in order
        with their events)."""
        workspaces = sorted(set().union(*(self._watchers.get(s, set()) for s in subscribers)))
        async with self._pool.acquire() as conn:
            found = await db.select_snapshot(conn, workspaces)
        for subscriber in subscribers:
            watched = self._watchers.get(subscriber)
            if watched is not None:
                statuses = snapshot_json(_merge(found, watched))
                self._hub.send(
                    (subscriber,), _frame({"type": "presence.snapshot", "presence": statuses})
                )

    def _announce(self, user_id: int, change: tuple[Status, list[int] | None]) -> None:
        status, workspaces = change
        if workspaces is None:
            self._spawn(self._announce_looked_up(user_id, status))
            return
        recipients: set[Subscriber] = set()
        for workspace_id in workspaces:
            recipients.update(self._by_workspace.get(workspace_id, ()))
        if recipients:
            body = {"type": "presence.updated", "user_id": user_id, "status": status}
            self._hub.send(recipients, _frame(body))

    async def _announce_looked_up(self, user_id: int, status: Status) -> None:
        async with self._pool.acquire() as conn:
            workspaces = await db.select_workspace_ids(conn, user_id)
        self._announce(user_id, (status, workspaces))


def _merge(found: dict[int, dict[int, Status]], workspaces: Iterable[int]) -> dict[int, Status]:
    merged: dict[int, Status] = {}
    for workspace_id in workspaces:
        merged.update(found.get(workspace_id, {}))
    return merged


def _discard(index: defaultdict[int, set[Subscriber]], key: int, subscriber: Subscriber) -> None:
    members = index.get(key)
    if members is not None:
        members.discard(subscriber)
        if not members:
            del index[key]


def _log_failure(what: str, exc: BaseException) -> None:
    if unavailable(exc) is not None or isinstance(exc, OSError | TimeoutError):
        log.warning(what, error=repr(exc))
    else:
        log.error(what, exc_info=exc)


PRESENCE = web.AppKey("presence", PresenceService)


async def presence_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    presence = app[PRESENCE] = PresenceService(
        app[POOL],
        app[BUS],
        app[HUB],
        grace=config.presence_grace,
        lease=config.presence_lease,
        interval=config.presence_interval,
    )
    await presence.start()
    try:
        yield
    finally:
        await presence.stop()
