"""The WebSocket hub: an event is framed once and buffered per subscriber; one flusher writes
each socket's frames in one call. A subscriber whose backlog would pass the limit is dropped
(1013) rather than slowing the others. Joining is two-step so nothing is missed and ``hello``
comes first: ``connect`` holds events while the handler loads the channels; ``attach``
subscribes them, minus removals seen meanwhile, writes ``hello``, then releases the rest.
Subscriptions follow membership events: a removed member stops receiving at once. A socket
also follows its workspaces (those it had when it connected, and any it is added to a channel
of since) for the lifecycle events of their public channels."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable

import structlog
from aiohttp import WSCloseCode, web

from echora_server.auth.identity import Identity
from echora_server.config import CONFIG
from echora_server.realtime.events import (
    CHANNEL_DELETED,
    CHANNEL_MEMBER_ADDED,
    CHANNEL_MEMBER_REMOVED,
    CREDENTIAL_REVOKED,
    USER_EVENTS,
    WORKSPACE_MEMBER_REMOVED,
    Event,
    reaches_workspace,
)
from echora_server.realtime.frames import text_frame

log = structlog.get_logger("echora.hub")

SEND_BUFFER = 256 * 1024
FLUSH_SLICE = 16
CLOSE_TIMEOUT = 5.0
# A reply waits while the peer reads nothing; past this, the socket is cut off.
REPLY_TIMEOUT = 30.0


class Subscriber:
    def __init__(
        self, ws: web.WebSocketResponse, identity: Identity, transport: asyncio.Transport
    ) -> None:
        self.ws = ws
        self.transport = transport
        self.identity = identity
        self.channels: dict[int, int] = {}  # channel id -> workspace id
        self.workspaces: set[int] = set()
        self.ready = False  # hello written; before that, frames are only held
        self.pending: list[bytes] = []
        self.pending_bytes = 0
        self.removed_channels: set[int] = set()  # removals seen before attach()
        self.removed_workspaces: set[int] = set()
        self.typed: dict[int, float] = {}  # channel id -> when this socket last said typing
        self.closing = False  # no more frames: dropped, disconnected or closing
        self._close_started = False

    @property
    def user_id(self) -> int:
        return self.identity.user.id

    def backlog(self) -> int:
        return self.pending_bytes + self.transport.get_write_buffer_size()

    def flush(self) -> None:
        if not self.pending:
            return
        data = self.pending[0] if len(self.pending) == 1 else b"".join(self.pending)
        self.pending.clear()
        self.pending_bytes = 0
        if not (self.closing or self.ws.closed or self.transport.is_closing()):
            self.transport.write(data)

    async def reply(self, frame: str) -> None:
        """After what is pending. Replies can be long (a resume), so they go through aiohttp's
        writer, which waits for a peer not reading; hub events never wait."""
        if self.closing:
            return
        self.flush()
        try:
            async with asyncio.timeout(REPLY_TIMEOUT):
                await self.ws.send_str(frame)
        except TimeoutError:
            self.transport.abort()  # the handler's loop then ends and cleans up
        except (ConnectionResetError, RuntimeError):
            pass  # the socket is going away; its handler cleans up

    def mute(self) -> None:
        self.closing = True
        self.pending.clear()
        self.pending_bytes = 0

    async def close(self, code: int, message: str) -> None:
        """Cut off a peer that ignores the close frame or was already closing (may never drain)."""
        if self._close_started:
            return
        self._close_started = True
        self.mute()
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                closed = await self.ws.close(code=code, message=message.encode())
        except (TimeoutError, ConnectionResetError, RuntimeError):
            closed = False
        if not closed:
            self.transport.abort()


class Hub:
    def __init__(self, send_buffer: int = SEND_BUFFER) -> None:
        self.send_buffer = send_buffer
        self._subscribers: set[Subscriber] = set()
        self._by_user: defaultdict[int, set[Subscriber]] = defaultdict(set)
        self._by_channel: defaultdict[int, set[Subscriber]] = defaultdict(set)
        self._by_workspace: defaultdict[int, set[Subscriber]] = defaultdict(set)
        self._dirty: dict[Subscriber, None] = {}  # subscribers with pending frames, in order
        self._wake = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._closers: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._subscribers)

    def start(self) -> None:
        self._flusher = asyncio.create_task(self._flush_forever(), name="ws-flusher")

    async def stop(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None

    def connect(
        self, ws: web.WebSocketResponse, identity: Identity, transport: asyncio.Transport
    ) -> Subscriber:
        subscriber = Subscriber(ws, identity, transport)
        self._subscribers.add(subscriber)
        self._by_user[subscriber.user_id].add(subscriber)
        return subscriber

    def attach(
        self,
        subscriber: Subscriber,
        channels: Iterable[tuple[int, int]],
        hello: Callable[[Subscriber], str],
        workspaces: Iterable[int] = (),
    ) -> None:
        for workspace_id in workspaces:
            if workspace_id not in subscriber.removed_workspaces:
                self._follow(subscriber, workspace_id)
        for channel_id, workspace_id in channels:
            if (
                channel_id not in subscriber.removed_channels
                and workspace_id not in subscriber.removed_workspaces
            ):
                self._subscribe(subscriber, channel_id, workspace_id)
        if subscriber.closing or subscriber not in self._subscribers:
            return  # dropped meanwhile
        subscriber.ready = True
        subscriber.pending.insert(0, text_frame(hello(subscriber).encode()))
        subscriber.flush()

    async def disconnect(self, subscriber: Subscriber) -> None:
        self._forget(subscriber)
        subscriber.mute()

    def _forget(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)
        self._dirty.pop(subscriber, None)
        self._discard(self._by_user, subscriber.user_id, subscriber)
        for channel_id in tuple(subscriber.channels):
            self._unsubscribe(subscriber, channel_id)
        for workspace_id in tuple(subscriber.workspaces):
            self._unfollow(subscriber, workspace_id)

    def _follow(self, subscriber: Subscriber, workspace_id: int) -> None:
        if subscriber in self._subscribers and subscriber.identity.may_use_workspace(workspace_id):
            subscriber.workspaces.add(workspace_id)
            self._by_workspace[workspace_id].add(subscriber)

    def _unfollow(self, subscriber: Subscriber, workspace_id: int) -> None:
        subscriber.workspaces.discard(workspace_id)
        self._discard(self._by_workspace, workspace_id, subscriber)

    def _subscribe(self, subscriber: Subscriber, channel_id: int, workspace_id: int) -> None:
        if subscriber in self._subscribers and subscriber.identity.may_use_workspace(workspace_id):
            subscriber.channels[channel_id] = workspace_id
            self._by_channel[channel_id].add(subscriber)

    def _unsubscribe(self, subscriber: Subscriber, channel_id: int) -> None:
        subscriber.channels.pop(channel_id, None)
        self._discard(self._by_channel, channel_id, subscriber)

    @staticmethod
    def _discard(
        index: defaultdict[int, set[Subscriber]], key: int, subscriber: Subscriber
    ) -> None:
        members = index.get(key)
        if members is not None:
            members.discard(subscriber)
            if not members:
                del index[key]

    async def deliver(self, event: Event) -> None:
        subjects = tuple(self._by_user.get(event.user_id, ())) if event.user_id else ()
        if event.type == CHANNEL_MEMBER_ADDED and event.channel_id is not None:
            for subscriber in subjects:
                subscriber.removed_channels.discard(event.channel_id)
                self._subscribe(subscriber, event.channel_id, event.workspace_id)
                self._follow(subscriber, event.workspace_id)
        if event.channel_id is not None and reaches_workspace(event):
            audience = self._by_workspace.get(event.workspace_id, set()).union(
                self._by_channel.get(event.channel_id, ())
            )
            if audience:
                self.send(audience, text_frame(event.frame().encode()))
        elif event.channel_id is not None:
            self._send_to_channel(event.channel_id, text_frame(event.frame().encode()))
        if event.type == CHANNEL_DELETED and event.channel_id is not None:
            for subscriber in tuple(self._by_channel.get(event.channel_id, ())):
                self._unsubscribe(subscriber, event.channel_id)
        elif event.type == CHANNEL_MEMBER_REMOVED and event.channel_id is not None:
            for subscriber in subjects:
                subscriber.removed_channels.add(event.channel_id)
                self._unsubscribe(subscriber, event.channel_id)
        elif event.type == CREDENTIAL_REVOKED:
            for subscriber in subjects:
                if subscriber.identity.credential_key() in (
                    event.data.get("token_id"),
                    event.data.get("session"),
                ):
                    self._drop(subscriber, WSCloseCode.POLICY_VIOLATION, "credential revoked")
        elif event.type in USER_EVENTS:
            self.send(
                [s for s in subjects if s.identity.may_use_workspace(event.workspace_id)],
                text_frame(event.frame().encode()),
            )
        elif event.type == WORKSPACE_MEMBER_REMOVED:
            wire = text_frame(event.frame().encode())
            for subscriber in subjects:
                if not subscriber.identity.may_use_workspace(event.workspace_id):
                    continue
                subscriber.removed_workspaces.add(event.workspace_id)
                self._unfollow(subscriber, event.workspace_id)
                for channel_id, workspace_id in tuple(subscriber.channels.items()):
                    if workspace_id == event.workspace_id:
                        self._unsubscribe(subscriber, channel_id)
                if subscriber.identity.token_workspace_id == event.workspace_id:
                    self._drop(subscriber, WSCloseCode.POLICY_VIOLATION, "removed from workspace")
                elif not self._enqueue(subscriber, wire):  # tell the removed member only
                    self._drop(subscriber)

    def _send_to_channel(self, channel_id: int, wire: bytes) -> None:
        members = self._by_channel.get(channel_id)
        if members:
            self.send(members, wire)

    def send(self, subscribers: Iterable[Subscriber], wire: bytes) -> None:
        """A framed event to these subscribers, in order with the rest (held before hello);
        one too slow to take it is dropped."""
        slow = [subscriber for subscriber in subscribers if not self._enqueue(subscriber, wire)]
        for subscriber in slow:
            log.warning("ws_slow_consumer_dropped", user_id=subscriber.user_id)
            self._drop(subscriber)

    def _enqueue(self, subscriber: Subscriber, wire: bytes) -> bool:
        if subscriber.closing:
            return True
        if not subscriber.ready:  # held until hello is written; bounded all the same
            if subscriber.pending_bytes + len(wire) > self.send_buffer:
                return False
        else:
            if subscriber.backlog() + len(wire) > self.send_buffer:
                subscriber.flush()  # a burst: let the kernel take what it can before judging
                if subscriber.backlog() + len(wire) > self.send_buffer:
                    return False
            if not subscriber.pending:
                self._dirty[subscriber] = None
                self._wake.set()
        subscriber.pending.append(wire)
        subscriber.pending_bytes += len(wire)
        return True

    async def _flush_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._dirty:
                batch, self._dirty = self._dirty, {}
                for count, subscriber in enumerate(batch, 1):
                    try:
                        subscriber.flush()
                    except Exception:  # one broken socket must not stop every delivery
                        log.exception("ws_flush_failed", user_id=subscriber.user_id)
                        self._drop(subscriber, WSCloseCode.INTERNAL_ERROR, "internal error")
                    if count % FLUSH_SLICE == 0:
                        # Let requests progress; events they publish meanwhile join the
                        # buffers of the sockets this round has not reached yet.
                        await asyncio.sleep(0)

    def _drop(
        self,
        subscriber: Subscriber,
        code: int = WSCloseCode.TRY_AGAIN_LATER,
        message: str = "too slow",
    ) -> None:
        self._forget(subscriber)
        subscriber.mute()  # the flusher may still hold it in the batch it is writing
        task = asyncio.create_task(subscriber.close(code, message))
        self._closers.add(task)
        task.add_done_callback(self._closers.discard)

    async def close_all(self, code: int = WSCloseCode.GOING_AWAY, message: str = "") -> None:
        await asyncio.gather(
            *(subscriber.close(code, message) for subscriber in tuple(self._subscribers)),
            return_exceptions=True,
        )


HUB = web.AppKey("hub", Hub)


async def hub_ctx(app: web.Application) -> AsyncIterator[None]:
    hub = app[HUB] = Hub(app[CONFIG].ws_send_buffer)
    hub.start()
    try:
        yield
    finally:
        await hub.stop()


async def close_websockets(app: web.Application) -> None:
    """On shutdown, before the handlers are waited for, so they can end."""
    await app[HUB].close_all(WSCloseCode.GOING_AWAY, "server shutdown")
