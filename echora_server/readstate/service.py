"""Read positions: a member of a channel marks how far they have read it. The position only
moves forward (an older message leaves the newer position) and names a message of that
channel. Anyone else, a channel of another workspace and a missing one answer alike (404);
the message is looked for only in the channel. A move is one transaction whose
``channel.read`` goes, on commit, to every socket of the member and no one else's; a mark
that moves nothing publishes nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
from aiohttp import web

from echora_server.auth.access import CHANNEL_NOT_FOUND, require_channel
from echora_server.auth.identity import Identity
from echora_server.core.errors import NotFound
from echora_server.db import readstate
from echora_server.db.pool import POOL
from echora_server.db.records import ReadState
from echora_server.messages.service import MESSAGE_NOT_FOUND
from echora_server.readstate.shapes import channel_read_state_json
from echora_server.realtime.bus import BUS, EventBus
from echora_server.realtime.events import CHANNEL_READ, Event


class ReadStateService:
    def __init__(self, pool: asyncpg.Pool, bus: EventBus) -> None:
        self._pool = pool
        self._bus = bus

    async def mark_read(self, identity: Identity, channel_id: int, message_id: int) -> ReadState:
        """The caller's read state of the channel after moving it up to ``message_id``."""
        user_id = identity.user.id
        async with self._pool.acquire() as conn, self._bus.transaction(conn) as events:
            access = await require_channel(conn, identity, channel_id)
            if not access.joined:  # a public channel's reader who is not in it
                raise NotFound(CHANNEL_NOT_FOUND)
            try:
                found, moved = await readstate.advance_read_state(
                    conn, channel_id, user_id, message_id
                )
            except asyncpg.ForeignKeyViolationError:  # left the channel since the check
                raise NotFound(CHANNEL_NOT_FOUND) from None
            if not found:
                raise NotFound(MESSAGE_NOT_FOUND)
            state = await readstate.select_read_state(conn, channel_id, user_id)
            if state is None:  # left the channel since the check
                raise NotFound(CHANNEL_NOT_FOUND)
            if moved:
                data = channel_read_state_json(channel_id, state)
                workspace_id = access.channel.workspace_id
                events.append(Event(CHANNEL_READ, workspace_id, None, data, user_id=user_id))
        return state


READ_STATE = web.AppKey("read_state", ReadStateService)


async def read_state_ctx(app: web.Application) -> AsyncIterator[None]:
    app[READ_STATE] = ReadStateService(app[POOL], app[BUS])
    yield
