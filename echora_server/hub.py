"""The WebSocket hub: which local sockets receive which channel's events.

One ``Client`` per socket: a bounded queue of pre-serialised text frames drained by one
writer task, so a slow reader never slows the others down; a client whose queue is full is
dropped at once and closed (1013, try again later) rather than buffered without end.
Subscriptions follow membership events, so a removed member stops receiving the moment the
removal is published.

Joining is two-step so that nothing is missed and ``hello`` is the first frame: ``connect``
registers the client (membership events about its user are recorded from then on) while
the handler loads its channels; ``attach`` subscribes them, minus any removal that arrived
meanwhile, queues ``hello`` and then whatever was held back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Callable, Iterable

import structlog
from aiohttp import WSCloseCode, web

from echora_server.auth.identity import Identity
from echora_server.events import (
    CHANNEL_MEMBER_ADDED,
    CHANNEL_MEMBER_REMOVED,
    CREDENTIAL_REVOKED,
    WORKSPACE_MEMBER_REMOVED,
    Event,
)

log = structlog.get_logger("echora.hub")

SEND_QUEUE_SIZE = 512
CLOSE_TIMEOUT = 5.0


class Client:
    """One connected socket: its queue, its writer task and its subscriptions."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        identity: Identity,
        queue_size: int,
        transport: asyncio.BaseTransport | None,
    ) -> None:
        self.ws = ws
        self.transport = transport
        self.identity = identity
        self.queue: asyncio.Queue[str] = asyncio.Queue(queue_size)
        self.channels: dict[int, int] = {}  # channel id -> workspace id
        self.ready = False
        self.held: list[str] = []  # frames that arrived before attach()
        self.removed_channels: set[int] = set()  # removals seen before attach()
        self.removed_workspaces: set[int] = set()
        self.closing = False
        self.writing = False
        self.writer = asyncio.create_task(self._write_forever(), name="ws-writer")

    @property
    def user_id(self) -> int:
        return self.identity.user.id

    def send(self, frame: str) -> bool:
        """Queue a frame; False when the client is too slow and must be dropped."""
        if self.closing:
            return True
        if not self.ready:
            self.held.append(frame)
            return len(self.held) <= self.queue.maxsize
        try:
            self.queue.put_nowait(frame)
        except asyncio.QueueFull:
            return False
        return True

    def idle(self) -> bool:
        """Nothing queued, nothing being written, the socket's buffer empty: a frame can
        be written straight away without waiting (and without overtaking queued ones)."""
        return (
            self.ready
            and not self.closing
            and not self.writing
            and self.queue.empty()
            and isinstance(self.transport, asyncio.WriteTransport)
            and self.transport.get_write_buffer_size() == 0
        )

    async def _write_forever(self) -> None:
        while True:
            frame = await self.queue.get()
            self.writing = True
            try:
                await self.ws.send_str(frame)
            except (ConnectionResetError, RuntimeError):
                return  # the socket is going away; its handler cleans up
            finally:
                self.writing = False

    async def close(self, code: int, message: str) -> None:
        """Close with ``code``; a peer that does not take the close frame is cut off."""
        if self.closing:
            return
        self.closing = True
        self.writer.cancel()
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self.ws.close(code=code, message=message.encode())
        except (TimeoutError, ConnectionResetError, RuntimeError):
            if isinstance(self.transport, asyncio.WriteTransport):
                self.transport.abort()


class Hub:
    def __init__(self, queue_size: int = SEND_QUEUE_SIZE) -> None:
        self.queue_size = queue_size
        self._clients: set[Client] = set()
        self._by_user: defaultdict[int, set[Client]] = defaultdict(set)
        self._by_channel: defaultdict[int, set[Client]] = defaultdict(set)
        self._closers: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._clients)

    def connect(
        self,
        ws: web.WebSocketResponse,
        identity: Identity,
        transport: asyncio.BaseTransport | None = None,
    ) -> Client:
        client = Client(ws, identity, self.queue_size, transport)
        self._clients.add(client)
        self._by_user[client.user_id].add(client)
        return client

    def attach(
        self,
        client: Client,
        channels: Iterable[tuple[int, int]],
        hello: Callable[[Client], str],
    ) -> None:
        """Subscribe the channels loaded for the client, then queue ``hello(client)`` and
        the frames held back meanwhile."""
        for channel_id, workspace_id in channels:
            if (
                channel_id not in client.removed_channels
                and workspace_id not in client.removed_workspaces
            ):
                self._subscribe(client, channel_id, workspace_id)
        held, client.held = client.held, []
        client.ready = True
        for frame in (hello(client), *held):
            if not client.send(frame):
                self._drop(client)
                return

    async def disconnect(self, client: Client) -> None:
        """Forget a client; always called from the socket handler's ``finally``."""
        self._forget(client)
        client.closing = True
        client.writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await client.writer

    def _forget(self, client: Client) -> None:
        self._clients.discard(client)
        self._discard(self._by_user, client.user_id, client)
        for channel_id in tuple(client.channels):
            self._unsubscribe(client, channel_id)

    def _subscribe(self, client: Client, channel_id: int, workspace_id: int) -> None:
        if client in self._clients and client.identity.may_use_workspace(workspace_id):
            client.channels[channel_id] = workspace_id
            self._by_channel[channel_id].add(client)

    def _unsubscribe(self, client: Client, channel_id: int) -> None:
        client.channels.pop(channel_id, None)
        self._discard(self._by_channel, channel_id, client)

    @staticmethod
    def _discard(index: defaultdict[int, set[Client]], key: int, client: Client) -> None:
        members = index.get(key)
        if members is not None:
            members.discard(client)
            if not members:
                del index[key]

    async def deliver(self, event: Event) -> None:
        """Apply one event from the fan-out: update subscriptions, then send it."""
        subjects = tuple(self._by_user.get(event.user_id, ())) if event.user_id else ()
        if event.type == CHANNEL_MEMBER_ADDED and event.channel_id is not None:
            for client in subjects:
                client.removed_channels.discard(event.channel_id)
                self._subscribe(client, event.channel_id, event.workspace_id)
        if event.channel_id is not None:
            await self._send_to_channel(event.channel_id, event.frame())
        if event.type == CHANNEL_MEMBER_REMOVED and event.channel_id is not None:
            for client in subjects:
                client.removed_channels.add(event.channel_id)
                self._unsubscribe(client, event.channel_id)
        elif event.type == CREDENTIAL_REVOKED:
            for client in subjects:
                if client.identity.credential_key() in (
                    event.data.get("token_id"),
                    event.data.get("session"),
                ):
                    self._drop(client, WSCloseCode.POLICY_VIOLATION, "credential revoked")
        elif event.type == WORKSPACE_MEMBER_REMOVED:
            frame = event.frame()
            for client in subjects:
                if not client.identity.may_use_workspace(event.workspace_id):
                    continue
                client.removed_workspaces.add(event.workspace_id)
                for channel_id, workspace_id in tuple(client.channels.items()):
                    if workspace_id == event.workspace_id:
                        self._unsubscribe(client, channel_id)
                if client.identity.token_workspace_id == event.workspace_id:
                    self._drop(client, WSCloseCode.POLICY_VIOLATION, "removed from workspace")
                elif not client.send(frame):  # tell the removed member, and nobody else
                    self._drop(client)

    async def _send_to_channel(self, channel_id: int, frame: str) -> None:
        # A snapshot: dropping a slow client changes the set while we iterate.
        for client in tuple(self._by_channel.get(channel_id, ())):
            if client.idle():
                # The fast path: waking a writer task per delivery costs more than the
                # write itself. With an empty buffer the transport is not paused, so this
                # write does not wait (frames are far below its 64 KiB high-water mark).
                with contextlib.suppress(ConnectionResetError, RuntimeError):
                    await client.ws.send_str(frame)
            elif not client.send(frame):
                log.warning("ws_slow_consumer_dropped", user_id=client.user_id)
                self._drop(client)

    def _drop(
        self, client: Client, code: int = WSCloseCode.TRY_AGAIN_LATER, message: str = "too slow"
    ) -> None:
        """Stop sending to a client now; close its socket in the background."""
        self._forget(client)
        task = asyncio.create_task(client.close(code, message))
        self._closers.add(task)
        task.add_done_callback(self._closers.discard)

    async def close_all(self, code: int = WSCloseCode.GOING_AWAY, message: str = "") -> None:
        """Close every socket (server shutdown: 1001 going away)."""
        await asyncio.gather(
            *(client.close(code, message) for client in tuple(self._clients)),
            return_exceptions=True,
        )
