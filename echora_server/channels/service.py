"""Channels and their members. Calls check *current* memberships; a write is one transaction
whose events go out on commit (one changing nothing, like joining twice, publishes nothing). A
channel the caller may not see answers 404 like a missing one, not leaking that it exists.
Who may do what:
- Workspace members create channels, public or private, and see and join the public ones.
- A private channel exists only for its members, even to workspace owners and admins.
- A channel member may add any other workspace member to it.
- Workspace owners and admins remove anyone from a channel; anyone may remove themselves.
- An archived channel (``channels.lifecycle``) takes no new members; members may leave.
- A direct message (``channels.direct``) is a private channel whose members are fixed: none of
  the membership calls here apply to it (``auth.access.refuse_direct``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
from aiohttp import web

from echora_server.accounts.shapes import user_json
from echora_server.auth.access import (
    CHANNEL_NOT_FOUND,
    refuse_direct,
    require_channel,
    require_membership,
    require_writable_channel,
    user_not_found,
)
from echora_server.auth.identity import Identity
from echora_server.channels.shapes import channel_json
from echora_server.core.errors import Conflict, Forbidden, InvalidRequest, NotFound
from echora_server.core.validation import check_text
from echora_server.db import channels, users, workspaces
from echora_server.db.pool import POOL
from echora_server.db.records import (
    MANAGER_ROLES,
    Channel,
    ChannelMember,
    ChannelView,
    ListedChannel,
    User,
)
from echora_server.realtime.bus import BUS, EventBus
from echora_server.realtime.events import (
    CHANNEL_CREATED,
    CHANNEL_MEMBER_ADDED,
    CHANNEL_MEMBER_REMOVED,
    WORKSPACE_MEMBER_REMOVED,
    Event,
)

MAX_CHANNEL_NAME = 80
MAX_TOPIC = 250
MEMBER_NOT_FOUND = "Member not found."


class ChannelService:
    def __init__(self, pool: asyncpg.Pool, bus: EventBus) -> None:
        self._pool = pool
        self._bus = bus

    async def create_channel(
        self,
        identity: Identity,
        workspace_id: int,
        name: str,
        *,
        private: bool = False,
        topic: str = "",
    ) -> ChannelView:
        name = check_text(name.strip(), "name", min_length=1, max_length=MAX_CHANNEL_NAME)
        topic = check_text(topic.strip(), "topic", max_length=MAX_TOPIC)
        async with self._pool.acquire() as conn, self._bus.transaction(conn) as events:
            await require_membership(conn, identity, workspace_id)
            channel = await channels.insert_channel(
                conn, workspace_id, name, topic, private, identity.user.id
            )
            if channel is None:
                raise Conflict(
                    "A channel with that name exists already.", code="channel_name_taken"
                )
            await channels.insert_channel_member(conn, channel.id, workspace_id, identity.user.id)
            # On member_added (it carries the channel) the hub subscribes the creator's sockets,
            # which then hear channel.created like the rest of its audience.
            events.append(member_added(channel, identity.user))
            events.append(channel_event(CHANNEL_CREATED, channel))
        return ChannelView(channel, joined=True)

    async def list_channels(self, identity: Identity, workspace_id: int) -> list[ListedChannel]:
        """The workspace's public channels and the private ones the caller is in, by name,
        with the caller's read state of each."""
        async with self._pool.acquire() as conn:
            await require_membership(conn, identity, workspace_id)
            return await channels.select_visible_channels(conn, workspace_id, identity.user.id)

    async def subscriptions(self, identity: Identity) -> tuple[list[tuple[int, int]], list[int]]:
        """What a socket follows: (channel, workspace) of each channel the caller is in now,
        and the caller's workspaces (their public channels' lifecycle events)."""
        async with self._pool.acquire() as conn:
            found = await channels.select_channel_ids_for_user(
                conn, identity.user.id, identity.token_workspace_id
            )
            mine = await workspaces.select_workspace_ids_of_user(
                conn, identity.user.id, identity.token_workspace_id
            )
        return found, mine

    async def get_channel(self, identity: Identity, channel_id: int) -> ChannelView:
        async with self._pool.acquire() as conn:
            access = await require_channel(conn, identity, channel_id)
        return ChannelView(access.channel, access.joined)

    async def join_channel(self, identity: Identity, channel_id: int) -> ChannelView:
        """Join a public channel (a private one the caller is not in is not found)."""
        async with self._pool.acquire() as conn, self._bus.transaction(conn) as events:
            # Held, so an archive under way is waited for and then refuses the join.
            access = await require_writable_channel(conn, identity, channel_id)
            refuse_direct(access)
            added = await _insert_member(conn, access.channel, identity.user.id)
            if added is None:
                raise NotFound(CHANNEL_NOT_FOUND)
            if added:
                events.append(member_added(access.channel, identity.user))
        return ChannelView(access.channel, joined=True)

    async def leave_channel(self, identity: Identity, channel_id: int) -> None:
        """Leave a channel; leaving one the caller is not in changes nothing."""
        async with self._pool.acquire() as conn, self._bus.transaction(conn) as events:
            access = await require_channel(conn, identity, channel_id)
            refuse_direct(access)
            removed = await channels.delete_channel_member(conn, channel_id, identity.user.id)
            if removed is not None:
                events.append(_member_removed(access.channel.workspace_id, channel_id, removed))

    async def list_channel_members(
        self, identity: Identity, channel_id: int
    ) -> list[ChannelMember]:
        async with self._pool.acquire() as conn:
            await require_channel(conn, identity, channel_id)
            return await channels.select_channel_members(conn, channel_id)

    async def add_channel_member(
        self,
        identity: Identity,
        channel_id: int,
        *,
        user_id: int | None = None,
        username: str | None = None,
    ) -> tuple[ChannelMember, bool]:
        """The member, and whether they were added now (False: they already were in)."""
        if (user_id is None) == (username is None):
            raise InvalidRequest("Give either user_id or username.")
        async with self._pool.acquire() as conn, self._bus.transaction(conn) as events:
            # Held, so an archive under way is waited for and then refuses the addition.
            access = await require_writable_channel(conn, identity, channel_id)
            refuse_direct(access)
            if not access.joined:
                raise Forbidden("Join the channel to add others to it.", code="not_channel_member")
            user = await _workspace_user(conn, access.channel.workspace_id, user_id, username)
            added = await _insert_member(conn, access.channel, user.id)
            if added is None:
                raise user_not_found()
            member = await channels.select_channel_member(conn, channel_id, user.id)
            if member is None:  # they left between the insert and this read
                raise NotFound(MEMBER_NOT_FOUND)
            if added:
                events.append(member_added(access.channel, user))
        return member, added

    async def remove_channel_member(
        self, identity: Identity, channel_id: int, user_id: int
    ) -> None:
        async with self._pool.acquire() as conn, self._bus.transaction(conn) as events:
            access = await require_channel(conn, identity, channel_id)
            refuse_direct(access)
            if user_id != identity.user.id and access.role not in MANAGER_ROLES:
                raise Forbidden(
                    "Only workspace owners and admins can remove others from a channel."
                )
            removed = await channels.delete_channel_member(conn, channel_id, user_id)
            if removed is None:
                raise NotFound(MEMBER_NOT_FOUND)
            events.append(_member_removed(access.channel.workspace_id, channel_id, removed))


async def remove_from_workspace_channels(
    conn: asyncpg.Connection, workspace_id: int, user_id: int
) -> list[Event]:
    """In the transaction removing a workspace member: take them out of its channels, returning
    the events (the foreign key would cascade the rows, but silently)."""
    user = await users.select_user(conn, user_id)
    if user is None:
        raise NotFound(MEMBER_NOT_FOUND)
    channel_ids = await channels.delete_workspace_channel_memberships(conn, workspace_id, user_id)
    data = {"workspace_id": workspace_id, "user": user_json(user), "channel_ids": channel_ids}
    # Channel events first, so members' lists update; then the hub drops the rest.
    return [
        *(_member_removed(workspace_id, channel_id, user) for channel_id in channel_ids),
        Event(WORKSPACE_MEMBER_REMOVED, workspace_id, None, data, user_id=user.id),
    ]


async def _workspace_user(
    conn: asyncpg.Connection, workspace_id: int, user_id: int | None, username: str | None
) -> User:
    if user_id is not None:
        user = await users.select_user(conn, user_id)
    else:
        user = await users.select_user_by_username(conn, (username or "").strip().lower())
    # A user of another workspace looks exactly like one that does not exist.
    if user is None or await workspaces.select_membership(conn, workspace_id, user.id) is None:
        raise user_not_found()
    return user


async def _insert_member(conn: asyncpg.Connection, channel: Channel, user_id: int) -> bool | None:
    """True if added, False if already in, None if not (or no longer) in the workspace: a race
    with their removal, caught by the foreign key."""
    try:
        return await channels.insert_channel_member(conn, channel.id, channel.workspace_id, user_id)
    except asyncpg.ForeignKeyViolationError:
        return None


def member_added(channel: Channel, user: User) -> Event:
    """``channel.member_added``: the hub subscribes the user's sockets to the channel."""
    # The channel rides along: the added user's devices may not know it yet.
    data = {"channel_id": channel.id, "channel": channel_json(channel), "user": user_json(user)}
    return Event(CHANNEL_MEMBER_ADDED, channel.workspace_id, channel.id, data, user_id=user.id)


def channel_event(kind: str, channel: Channel) -> Event:
    """A lifecycle event (``realtime.events.CHANNEL_LIFECYCLE``) with the channel's shape."""
    data = {"channel_id": channel.id, "channel": channel_json(channel)}
    return Event(kind, channel.workspace_id, channel.id, data)


def _member_removed(workspace_id: int, channel_id: int, user: User) -> Event:
    data = {"channel_id": channel_id, "user": user_json(user)}
    return Event(CHANNEL_MEMBER_REMOVED, workspace_id, channel_id, data, user_id=user.id)


CHANNELS = web.AppKey("channels", ChannelService)


async def channels_ctx(app: web.Application) -> AsyncIterator[None]:
    app[CHANNELS] = ChannelService(app[POOL], app[BUS])
    yield
