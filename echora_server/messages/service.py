"""Messages, for REST and the WebSocket alike. Calls check *current* memberships; a write is one
transaction whose events go out on commit. A message the caller may not see answers 404 like a
missing one, so its existence does not leak. Channel members post; workspace members read public
channels; the author edits; the author or a workspace owner or admin deletes. An archived
channel's messages are read-only: posting, editing and deleting answer 403 ``channel_archived``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
from aiohttp import web

from echora_server.audit.record import attribute
from echora_server.auth.access import (
    CHANNEL_NOT_FOUND,
    require_channel,
    require_writable_channel,
)
from echora_server.auth.identity import Identity
from echora_server.config import CONFIG
from echora_server.core.errors import Forbidden, InvalidRequest, NotFound
from echora_server.core.ratelimit import RateLimiter
from echora_server.core.tasks import TASKS, OwnedTasks
from echora_server.core.validation import MAX_ID
from echora_server.db import attachments, messages
from echora_server.db.pool import POOL
from echora_server.db.records import MANAGER_ROLES, ChannelAccess, Message
from echora_server.files.deletion import delete_queued
from echora_server.messages.attachments import link_attachments, with_attachments
from echora_server.messages.drafts import Draft, check_content, empty_content
from echora_server.messages.mentions import record_mentions
from echora_server.messages.shapes import message_json
from echora_server.messages.tallies import for_everyone, with_reactions
from echora_server.realtime.bus import BUS, EventBus
from echora_server.realtime.events import MESSAGE_CREATED, MESSAGE_DELETED, MESSAGE_UPDATED, Event
from echora_server.storage.base import Storage
from echora_server.storage.factory import STORAGE

DEFAULT_PAGE = 50
MAX_PAGE = 200
MESSAGE_NOT_FOUND = "Message not found."


class MessageService:
    def __init__(
        self,
        pool: asyncpg.Pool,
        storage: Storage,
        bus: EventBus,
        limiter: RateLimiter,
        tasks: OwnedTasks,
    ) -> None:
        self._pool = pool
        self._storage = storage
        self.bus = bus
        self._limiter = limiter
        self._tasks = tasks

    async def post_message(
        self, identity: Identity, channel_id: int, draft: Draft
    ) -> tuple[Message, bool]:
        """A retry with a client_id this author used in this channel returns that message,
        links nothing and publishes nothing (it went out once). Deleting it frees the id."""
        self.take_send_token(identity)
        async with self._pool.acquire() as conn, self.bus.transaction(conn) as events:
            message, created = await write_message(conn, identity, channel_id, draft)
            if created:
                events.append(message_event(MESSAGE_CREATED, message))
        return message, created

    async def posted_before(
        self, identity: Identity, channel_id: int, client_id: str
    ) -> Message | None:
        async with self._pool.acquire() as conn:
            found = await messages.select_message_by_client_id(
                conn, identity.user.id, channel_id, client_id
            )
            if found is None:
                return None
            (message,) = await with_attachments(conn, [found])
            return (await with_reactions(conn, [message], identity.user.id))[0]

    async def list_messages(
        self,
        identity: Identity,
        channel_id: int,
        *,
        before: int | None = None,
        after: int | None = None,
        limit: int = DEFAULT_PAGE,
    ) -> tuple[list[Message], bool]:
        """``after`` pages oldest first; else back from ``before`` (or the latest), newest first."""
        if before is not None and after is not None:
            raise InvalidRequest("Give before or after, not both.")
        for field, value, low, high in (
            ("before", before, 0, MAX_ID),
            ("after", after, 0, MAX_ID),
            ("limit", limit, 1, MAX_PAGE),
        ):
            if value is not None and not low <= value <= high:
                raise InvalidRequest(details=[{"field": field, "problem": f"must be {low}-{high}"}])
        async with self._pool.acquire() as conn:
            await require_channel(conn, identity, channel_id)
            if after is not None:
                page = await messages.select_messages_after(conn, channel_id, after, limit + 1)
            else:
                cursor = before if before is not None else MAX_ID
                page = await messages.select_messages_before(conn, channel_id, cursor, limit + 1)
            shown = await with_attachments(conn, page[:limit])
            shown = await with_reactions(conn, shown, identity.user.id)
        return shown, len(page) > limit

    async def missed_messages(
        self, identity: Identity, after_id: int, limit: int
    ) -> tuple[list[Message], bool]:
        """What a reconnecting socket missed in the caller's current channels, oldest first."""
        async with self._pool.acquire() as conn:
            missed = await messages.select_messages_after_for_user(
                conn, identity.user.id, after_id, limit + 1, identity.token_workspace_id
            )
            shown = await with_attachments(conn, missed[:limit])
            shown = await with_reactions(conn, shown, identity.user.id)
        return shown, len(missed) > limit

    async def edit_message(self, identity: Identity, message_id: int, content: str) -> Message:
        """The text may become empty only if the message has attachments or links."""
        content = check_content(content, may_be_empty=True)
        self.take_send_token(identity)  # edits fan out like posts: one budget
        async with self._pool.acquire() as conn, self.bus.transaction(conn) as events:
            message, _access = await _visible_message(conn, identity, message_id, writing=True)
            if message.author.id != identity.user.id:
                raise Forbidden("Only the author can edit a message.")
            found = await messages.update_message_content(conn, message_id, content)
            if found is None:  # deleted meanwhile
                raise NotFound(MESSAGE_NOT_FOUND)
            (updated,) = await with_attachments(conn, [found])
            if not (content.strip() or updated.links or updated.attachments):
                raise empty_content()  # the update rolls back
            await record_mentions(conn, updated, previous=message.content)
            (updated,) = await with_reactions(conn, [updated], identity.user.id)
            events.append(message_event(MESSAGE_UPDATED, updated))
        return updated

    async def delete_message(self, identity: Identity, message_id: int) -> None:
        """Rows first (queuing their objects in the same transaction), objects after the
        commit, so no row points at a lost object."""
        async with self._pool.acquire() as conn, self.bus.transaction(conn) as events:
            message, access = await _visible_message(conn, identity, message_id, writing=True)
            if message.author.id != identity.user.id and access.role not in MANAGER_ROLES:
                raise Forbidden("Only the author or a workspace owner or admin can delete this.")
            await attribute(conn, identity.user.id)  # the files' deletion records name who
            keys = await attachments.delete_attachments_of_message(conn, message_id)
            if not await messages.delete_message(conn, message_id):
                raise NotFound(MESSAGE_NOT_FOUND)
            data = {"channel_id": message.channel_id, "message_id": message.id}
            events.append(Event(MESSAGE_DELETED, message.workspace_id, message.channel_id, data))
        if keys:  # owned: a cancelled handler does not cut it short
            await self._tasks.run(delete_queued(self._pool, self._storage, keys))

    def take_send_token(self, identity: Identity) -> None:
        self._limiter.take(
            identity.user.id, "You are sending messages too fast; wait and try again."
        )


async def write_message(
    conn: asyncpg.Connection, identity: Identity, channel_id: int, draft: Draft
) -> tuple[Message, bool]:
    """Insert and link in the caller's transaction, which any error must roll back; returns the
    message with its attachments and whether it is new."""
    access = await require_writable_channel(conn, identity, channel_id)
    if not access.joined:
        raise Forbidden("Join the channel to post in it.", code="not_channel_member")
    message = await messages.insert_message(
        conn, channel_id, identity.user.id, draft.content, draft.client_id, draft.links
    )
    created = message is not None
    if message is not None:
        await link_attachments(conn, message, draft.attachment_ids)
        await record_mentions(conn, message)
    elif draft.client_id is not None:
        message = await messages.select_message_by_client_id(
            conn, identity.user.id, channel_id, draft.client_id
        )
    if message is None:  # removed from the channel since the check above
        raise NotFound(CHANNEL_NOT_FOUND)
    if not created or draft.attachment_ids:  # a new text-only one has none to load
        (message,) = await with_attachments(conn, [message])
    if not created:  # a new one has no reactions yet
        (message,) = await with_reactions(conn, [message], identity.user.id)
    return message, created


async def _visible_message(
    conn: asyncpg.Connection, identity: Identity, message_id: int, *, writing: bool = False
) -> tuple[Message, ChannelAccess]:
    message = await messages.select_message(conn, message_id)
    if message is None:
        raise NotFound(MESSAGE_NOT_FOUND)
    check = require_writable_channel if writing else require_channel
    try:
        access = await check(conn, identity, message.channel_id)
    except NotFound:
        raise NotFound(MESSAGE_NOT_FOUND) from None  # no hint that the message exists
    return message, access


def message_event(kind: str, message: Message) -> Event:
    data = {"channel_id": message.channel_id, "message": message_json(for_everyone(message))}
    return Event(kind, message.workspace_id, message.channel_id, data)


MESSAGES = web.AppKey("messages", MessageService)


async def messages_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    limiter = RateLimiter(config.message_rate_per_minute, burst=config.message_rate_burst)
    app[MESSAGES] = MessageService(app[POOL], app[STORAGE], app[BUS], limiter, app[TASKS])
    yield
