"""The WebSocket hub: which local sockets receive which channel's events.

Every frame for a socket goes through one ordered, bounded buffer (``Client.pending``).
An event is serialised and framed once, appended to the buffer of each subscriber (a list
append), and one flusher task writes each socket's buffered frames in a single call,
yielding to the event loop every ``FLUSH_SLICE`` sockets. While it works through a large
channel, new events pile up behind the sockets not yet written, so under load one write
carries several frames instead of one system call per frame per socket.

A client whose buffered bytes, its own and its transport's, would pass the limit is too
slow to read: it is dropped at once and closed (1013, try again later) instead of being
buffered without end or slowing the others down. Subscriptions follow membership events,
so a removed member stops receiving the moment the removal is published.

Joining is two-step so that nothing is missed and ``hello`` is the first frame: ``connect``
registers the client (events and membership changes are recorded from then on) while the
handler loads its channels; ``attach`` subscribes them, minus any removal that arrived
meanwhile, writes ``hello`` and then releases what was held back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Callable, Iterable

import structlog
from aiohttp import WSCloseCode, web

from echora_server.auth.identity import Identity
from echora_server.realtime.events import (
    CHANNEL_MEMBER_ADDED,
    CHANNEL_MEMBER_REMOVED,
    CREDENTIAL_REVOKED,
    WORKSPACE_MEMBER_REMOVED,
    Event,
)
from echora_server.realtime.frames import text_frame

log = structlog.get_logger("echora.hub")

SEND_BUFFER = 256 * 1024
FLUSH_SLICE = 16
CLOSE_TIMEOUT = 5.0
# A reply waits while the peer reads nothing; past this, the socket is cut off.
REPLY_TIMEOUT = 30.0


class Client:
    """One connected socket: its subscriptions and the frames waiting to be written."""

    def __init__(
        self, ws: web.WebSocketResponse, identity: Identity, transport: asyncio.Transport
    ) -> None:
        self.ws = ws
        self.transport = transport
        self.identity = identity
        self.channels: dict[int, int] = {}  # channel id -> workspace id
        self.ready = False  # hello written; before that, frames are only held
        self.pending: list[bytes] = []
        self.pending_bytes = 0
        self.removed_channels: set[int] = set()  # removals seen before attach()
        self.removed_workspaces: set[int] = set()
        self.closing = False  # no more frames: dropped, disconnected or closing
        self._close_started = False

    @property
    def user_id(self) -> int:
        return self.identity.user.id

    def backlog(self) -> int:
        """Bytes not yet taken by the kernel: held here plus the transport's buffer."""
        return self.pending_bytes + self.transport.get_write_buffer_size()

    def flush(self) -> None:
        """Write everything pending in one call (the transport never blocks)."""
        if not self.pending:
            return
        data = self.pending[0] if len(self.pending) == 1 else b"".join(self.pending)
        self.pending.clear()
        self.pending_bytes = 0
        if not (self.closing or self.ws.closed or self.transport.is_closing()):
            self.transport.write(data)

    async def reply(self, frame: str) -> None:
        """Answer the client's own request, after what is already pending for it.

        Replies may be long (a resume replays up to a thousand messages), so they go
        through aiohttp's writer, which waits while the peer is not reading; hub events
        never wait."""
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
        """Send nothing more (what is pending is dropped)."""
        self.closing = True
        self.pending.clear()
        self.pending_bytes = 0

    async def close(self, code: int, message: str) -> None:
        """Close with ``code``; a peer that does not take the close frame is cut off, and
        so is a socket aiohttp was already closing (its buffer may never drain)."""
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
        self._clients: set[Client] = set()
        self._by_user: defaultdict[int, set[Client]] = defaultdict(set)
        self._by_channel: defaultdict[int, set[Client]] = defaultdict(set)
        self._dirty: dict[Client, None] = {}  # clients with pending frames, in order
        self._wake = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._closers: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._clients)

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
    ) -> Client:
        client = Client(ws, identity, transport)
        self._clients.add(client)
        self._by_user[client.user_id].add(client)
        return client

    def attach(
        self,
        client: Client,
        channels: Iterable[tuple[int, int]],
        hello: Callable[[Client], str],
    ) -> None:
        """Subscribe the channels loaded for the client, write ``hello(client)``, then
        release the frames held back meanwhile."""
        for channel_id, workspace_id in channels:
            if (
                channel_id not in client.removed_channels
                and workspace_id not in client.removed_workspaces
            ):
                self._subscribe(client, channel_id, workspace_id)
        if client.closing or client not in self._clients:
            return  # dropped meanwhile
        client.ready = True
        client.pending.insert(0, text_frame(hello(client).encode()))
        client.flush()

    async def disconnect(self, client: Client) -> None:
        """Forget a client; always called from the socket handler's ``finally``."""
        self._forget(client)
        client.mute()

    def _forget(self, client: Client) -> None:
        self._clients.discard(client)
        self._dirty.pop(client, None)
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
            self._send_to_channel(event.channel_id, text_frame(event.frame().encode()))
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
            wire = text_frame(event.frame().encode())
            for client in subjects:
                if not client.identity.may_use_workspace(event.workspace_id):
                    continue
                client.removed_workspaces.add(event.workspace_id)
                for channel_id, workspace_id in tuple(client.channels.items()):
                    if workspace_id == event.workspace_id:
                        self._unsubscribe(client, channel_id)
                if client.identity.token_workspace_id == event.workspace_id:
                    self._drop(client, WSCloseCode.POLICY_VIOLATION, "removed from workspace")
                elif not self._enqueue(client, wire):  # tell the removed member only
                    self._drop(client)

    def _send_to_channel(self, channel_id: int, wire: bytes) -> None:
        members = self._by_channel.get(channel_id)
        if not members:
            return
        slow = [client for client in members if not self._enqueue(client, wire)]
        for client in slow:
            log.warning("ws_slow_consumer_dropped", user_id=client.user_id)
            self._drop(client)

    def _enqueue(self, client: Client, wire: bytes) -> bool:
        """Buffer one frame for a client; False when it is too slow and must be dropped."""
        if client.closing:
            return True
        if not client.ready:  # held until hello is written; bounded all the same
            if client.pending_bytes + len(wire) > self.send_buffer:
                return False
        else:
            if client.backlog() + len(wire) > self.send_buffer:
                client.flush()  # a burst: let the kernel take what it can before judging
                if client.backlog() + len(wire) > self.send_buffer:
                    return False
            if not client.pending:
                self._dirty[client] = None
                self._wake.set()
        client.pending.append(wire)
        client.pending_bytes += len(wire)
        return True

    async def _flush_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._dirty:
                batch, self._dirty = self._dirty, {}
                for count, client in enumerate(batch, 1):
                    try:
                        client.flush()
                    except Exception:  # one broken socket must not stop every delivery
                        log.exception("ws_flush_failed", user_id=client.user_id)
                        self._drop(client, WSCloseCode.INTERNAL_ERROR, "internal error")
                    if count % FLUSH_SLICE == 0:
                        # Let requests progress; events they publish meanwhile join the
                        # buffers of the sockets this round has not reached yet.
                        await asyncio.sleep(0)

    def _drop(
        self, client: Client, code: int = WSCloseCode.TRY_AGAIN_LATER, message: str = "too slow"
    ) -> None:
        """Stop sending to a client now; close its socket in the background."""
        self._forget(client)
        client.mute()  # the flusher may still hold it in the batch it is writing
        task = asyncio.create_task(client.close(code, message))
        self._closers.add(task)
        task.add_done_callback(self._closers.discard)

    async def close_all(self, code: int = WSCloseCode.GOING_AWAY, message: str = "") -> None:
        """Close every socket (server shutdown: 1001 going away)."""
        await asyncio.gather(
            *(client.close(code, message) for client in tuple(self._clients)),
            return_exceptions=True,
        )
