"""Direct messages: a conversation of 2 to 8 members of one workspace (bots included). It is a
channel of kind ``dm`` (private, so only its members see or read it) whose member set is
fixed when it is opened and unique per workspace: opening the same set again, in any order,
finds the same conversation, and two concurrent first opens create one (the database's unique
index decides). Messages, files and events are those of channels; the membership routes of
channels refuse it (``auth.access.refuse_direct``)."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import asyncpg
from aiohttp import web

from echora_server.auth.access import require_direct_members, require_membership, user_not_found
from echora_server.auth.identity import Identity
from echora_server.channels.service import member_added
from echora_server.core.errors import Conflict
from echora_server.db import channels
from echora_server.db.pool import POOL
from echora_server.db.records import Channel, DirectMessage, ListedDirect, User
from echora_server.realtime.bus import BUS, EventBus
from echora_server.realtime.events import Event


def direct_name(member_ids: list[int]) -> str:
    """The row's name: derived from the member set, and starting with a control character that
    no channel name may hold, so a channel can never take it."""
    digest = hashlib.sha256(",".join(map(str, member_ids)).encode()).hexdigest()
    return f"\x1edm:{digest[:40]}"


async def open_direct(
    conn: asyncpg.Connection,
    workspace_id: int,
    created_by: int,
    members: list[User],
    events: list[Event],
) -> tuple[Channel, bool]:
    """In the caller's transaction: the members' conversation, created if needed, and whether
    it was created now. Every member is in it (again, after leaving the workspace and coming
    back); a ``channel.member_added`` event goes to ``events`` for each one put in now."""
    ids = sorted(user.id for user in members)
    channel = await channels.insert_direct(conn, workspace_id, direct_name(ids), created_by, ids)
    created = channel is not None
    if channel is None:
        channel = await channels.select_direct(conn, workspace_id, ids)
        if channel is None:  # the name's digest taken by another set: 2**-160
            raise Conflict("This conversation cannot be opened.", code="direct_message_conflict")
    for user in members:
        try:
            added = await channels.insert_channel_member(conn, channel.id, workspace_id, user.id)
        except asyncpg.ForeignKeyViolationError:  # left the workspace since the check
            raise user_not_found() from None
        if added:
            events.append(member_added(channel, user))
    return channel, created


class DirectMessageService:
    def __init__(self, pool: asyncpg.Pool, bus: EventBus) -> None:
        self._pool = pool
        self._bus = bus

    async def open(
        self, identity: Identity, workspace_id: int, user_ids: list[int]
    ) -> tuple[DirectMessage, bool]:
        """The conversation of the caller and ``user_ids``, and whether it was created now."""
        async with self._pool.acquire() as conn, self._bus.transaction(conn) as events:
            members = await require_direct_members(conn, identity, workspace_id, user_ids)
            channel, created = await open_direct(
                conn, workspace_id, identity.user.id, members, events
            )
            (dm,) = await channels.with_members(conn, [channel])
        return dm, created

    async def list_mine(self, identity: Identity, workspace_id: int) -> list[ListedDirect]:
        """The caller's direct messages in the workspace, oldest first, with the caller's read
        state of each."""
        async with self._pool.acquire() as conn:
            await require_membership(conn, identity, workspace_id)
            return await channels.select_directs_of_user(conn, workspace_id, identity.user.id)


DIRECT_MESSAGES = web.AppKey("direct_messages", DirectMessageService)


async def direct_messages_ctx(app: web.Application) -> AsyncIterator[None]:
    app[DIRECT_MESSAGES] = DirectMessageService(app[POOL], app[BUS])
    yield
