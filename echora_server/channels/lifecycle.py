"""A channel's lifecycle after its creation: renamed or given a topic, archived and unarchived,
deleted. Each holds the channel's row for its transaction (``db.channels`` locks), so writes
into the channel under way finish first and later ones see the result. Who may do what:
- Rename and topic: in a public channel, its members and workspace owners and admins; in a
  private one, workspace owners and admins who are its members (others see no such channel).
  Names stay unique per workspace, ignoring case (409 ``channel_name_taken``).
- Archive and unarchive: workspace owners and admins, and the channel's creator while a
  member of it. An archived channel is read-only (``auth.access.refuse_archived``): nothing
  is posted, edited, deleted, reacted to or uploaded to it, no one joins it or is added to it,
  and it is neither renamed nor given a topic until unarchived; members may leave.
- Delete: workspace owners and admins (a private channel only if they are in it). Its
  members, messages, reactions and files go in one transaction; the files' objects after the
  commit, through the deletion queue (``files.deletion``), which the sweeper retries.
- None of these apply to a direct message (403 ``direct_message``).
A call that changes nothing publishes nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
from aiohttp import web

from echora_server.audit.record import attribute
from echora_server.auth.access import channel_or_404, refuse_archived
from echora_server.auth.identity import Identity
from echora_server.channels.service import MAX_CHANNEL_NAME, MAX_TOPIC, channel_event
from echora_server.core.errors import Conflict, Forbidden
from echora_server.core.tasks import TASKS, OwnedTasks
from echora_server.core.validation import check_text
from echora_server.db import channels
from echora_server.db.channels import ChannelLock
from echora_server.db.pool import POOL
from echora_server.db.records import MANAGER_ROLES, ChannelAccess, ChannelView
from echora_server.files.deletion import delete_queued
from echora_server.realtime.bus import BUS, EventBus
from echora_server.realtime.events import (
    CHANNEL_ARCHIVED,
    CHANNEL_DELETED,
    CHANNEL_UNARCHIVED,
    CHANNEL_UPDATED,
)
from echora_server.storage.base import Storage
from echora_server.storage.factory import STORAGE


class ChannelLifecycle:
    def __init__(
        self, pool: asyncpg.Pool, bus: EventBus, storage: Storage, tasks: OwnedTasks
    ) -> None:
        self._pool = pool
        self._bus = bus
        self._storage = storage
        self._tasks = tasks

    async def update(
        self,
        identity: Identity,
        channel_id: int,
        *,
        name: str | None = None,
        topic: str | None = None,
    ) -> ChannelView:
        """Rename the channel and/or set its topic (None leaves it as it is)."""
        if name is not None:
            name = check_text(name.strip(), "name", min_length=1, max_length=MAX_CHANNEL_NAME)
        if topic is not None:
            topic = check_text(topic.strip(), "topic", max_length=MAX_TOPIC)
        async with self._pool.acquire() as conn, self._bus.transaction(conn) as events:
            access = await _hold(conn, identity, channel_id, "update")
            refuse_archived(access)
            manager = access.role in MANAGER_ROLES
            if access.channel.private and not manager:
                raise Forbidden("Only workspace owners and admins can change a private channel.")
            if not (access.joined or manager):
                raise Forbidden("Join the channel to change it.", code="not_channel_member")
            before = access.channel
            if (name in (None, before.name)) and (topic in (None, before.topic)):
                return ChannelView(before, access.joined)
            channel = await channels.update_channel(conn, channel_id, name, topic)
            if channel is None:
                raise Conflict(
                    "A channel with that name exists already.", code="channel_name_taken"
                )
            events.append(channel_event(CHANNEL_UPDATED, channel))
        return ChannelView(channel, access.joined)

    async def set_archived(
        self, identity: Identity, channel_id: int, archived: bool
    ) -> ChannelView:
        async with self._pool.acquire() as conn, self._bus.transaction(conn) as events:
            access = await _hold(conn, identity, channel_id, "update")
            creator = access.joined and access.channel.created_by == identity.user.id
            if not (creator or access.role in MANAGER_ROLES):
                raise Forbidden(
                    "Only workspace owners and admins, or the channel's creator, can archive it."
                )
            if access.channel.archived == archived:
                return ChannelView(access.channel, access.joined)
            channel = await channels.set_archived(conn, channel_id, archived)
            events.append(
                channel_event(CHANNEL_ARCHIVED if archived else CHANNEL_UNARCHIVED, channel)
            )
        return ChannelView(channel, access.joined)

    async def delete(self, identity: Identity, channel_id: int) -> None:
        """Rows first (their triggers queue the objects in the same transaction), objects
        after the commit, as a message's delete does."""
        async with self._pool.acquire() as conn:
            async with conn.transaction():
                access = await _hold(conn, identity, channel_id, "delete")
                if access.role not in MANAGER_ROLES:
                    raise Forbidden("Only workspace owners and admins can delete a channel.")
                await attribute(conn, identity.user.id)  # the files' deletion records name who
                # Staged before the delete: a bot's inbox entry goes to the channel's members,
                # who are gone after it.
                events = [channel_event(CHANNEL_DELETED, access.channel)]
                await self._bus.stage(conn, events)
                keys = await channels.delete_channel(conn, channel_id)
            await self._bus.committed(events)
        if keys:  # owned: a cancelled handler does not cut it short
            await self._tasks.run(delete_queued(self._pool, self._storage, keys))


async def _hold(
    conn: asyncpg.Connection, identity: Identity, channel_id: int, lock: ChannelLock
) -> ChannelAccess:
    access = await channels.select_channel_access(conn, channel_id, identity.user.id, lock)
    access = channel_or_404(identity, access)
    if access.channel.direct:  # the code refuse_direct gives, with words for this
        raise Forbidden(
            "A direct message is not renamed, archived or deleted.", code="direct_message"
        )
    return access


CHANNEL_LIFECYCLE = web.AppKey("channel_lifecycle", ChannelLifecycle)


async def channel_lifecycle_ctx(app: web.Application) -> AsyncIterator[None]:
    app[CHANNEL_LIFECYCLE] = ChannelLifecycle(app[POOL], app[BUS], app[STORAGE], app[TASKS])
    yield
