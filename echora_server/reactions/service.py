"""Reactions: whoever may read a message's channel may add and remove their own, one per
emoji, unless its channel is archived (403 ``channel_archived``). A message they cannot see
answers like a missing one. Each change is one transaction
holding the message's row, so reactions to one message take turns and every event's count
is the count its commit left; a change that changes nothing publishes nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import asyncpg
from aiohttp import web

from echora_server.auth.access import refuse_archived, require_channel
from echora_server.auth.identity import Identity
from echora_server.core.errors import NotFound
from echora_server.db import reactions
from echora_server.db.pool import POOL
from echora_server.db.reactions import ReactionChange
from echora_server.messages.service import MESSAGE_NOT_FOUND, MESSAGES
from echora_server.realtime.bus import BUS, EventBus
from echora_server.realtime.events import REACTION_ADDED, REACTION_REMOVED, Event

# Takes one of the caller's send tokens or raises 429 (the budget message sends use).
SendBudget = Callable[[Identity], None]


class ReactionService:
    def __init__(self, pool: asyncpg.Pool, bus: EventBus, send_budget: SendBudget) -> None:
        self._pool = pool
        self._bus = bus
        self._send_budget = send_budget

    async def add(self, identity: Identity, message_id: int, emoji: str) -> ReactionChange:
        """``changed`` is False when it was there already."""
        return await self._change(identity, message_id, emoji, add=True)

    async def remove(self, identity: Identity, message_id: int, emoji: str) -> ReactionChange:
        """``changed`` is False when it was not there."""
        return await self._change(identity, message_id, emoji, add=False)

    async def _change(
        self, identity: Identity, message_id: int, emoji: str, *, add: bool
    ) -> ReactionChange:
        self._send_budget(identity)  # every change fans out like a post
        user_id = identity.user.id
        async with self._pool.acquire() as conn, self._bus.transaction(conn) as events:
            channel_id = await reactions.lock_message(conn, message_id)
            if channel_id is None:
                raise NotFound(MESSAGE_NOT_FOUND)
            try:
                access = await require_channel(conn, identity, channel_id)
            except NotFound:
                raise NotFound(MESSAGE_NOT_FOUND) from None  # no hint that it exists
            # Read, not held: the message's row is held first here, and a channel's delete
            # holds the channel's row before its messages'. An archive committed meanwhile
            # may let this one change through.
            refuse_archived(access)
            write = reactions.insert_reaction if add else reactions.delete_reaction
            change = await write(conn, message_id, user_id, emoji)
            if change.changed:
                data = {
                    "channel_id": channel_id,
                    "message_id": message_id,
                    "emoji": emoji,
                    "user_id": user_id,
                    "count": change.count,
                }
                kind = REACTION_ADDED if add else REACTION_REMOVED
                events.append(Event(kind, access.channel.workspace_id, channel_id, data))
        return change


REACTIONS = web.AppKey("reactions", ReactionService)


async def reactions_ctx(app: web.Application) -> AsyncIterator[None]:
    app[REACTIONS] = ReactionService(app[POOL], app[BUS], app[MESSAGES].take_send_token)
    yield
