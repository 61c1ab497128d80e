"""The chat service for messages, shared by the REST handlers and the WebSocket.

Each function authorizes the caller against *current* memberships, writes in one
transaction and publishes its events only after that transaction committed; a write that
changes nothing (a retried post) publishes nothing. A message in a channel the caller may
not see answers 404 exactly like a missing one. Channels and their members are in
echora_server/channels.py, under the same rules.

Who may do what: members of a channel post in it; every workspace member may read a public
channel's history; the author edits; the author or a workspace owner or admin deletes.
Attachments and links (echora_server/message_parts.py) are written in the message's own
transaction and come with it on every read.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
from aiohttp import web

from echora_server.auth.access import CHANNEL_NOT_FOUND, require_channel
from echora_server.auth.identity import Identity
from echora_server.core.errors import Forbidden, InvalidRequest, NotFound, TooManyRequests
from echora_server.core.validation import MAX_ID, check_text
from echora_server.db import attachments, messages
from echora_server.db.records import MANAGER_ROLES, ChannelAccess, Message
from echora_server.keys import MESSAGE_LIMITER, POOL
from echora_server.messages.extras import (
    LinkIn,
    Parts,
    check_parts,
    delete_objects,
    link_attachments,
    with_attachments,
)
from echora_server.messages.shapes import message_json
from echora_server.realtime.events import (
    MESSAGE_CREATED,
    MESSAGE_DELETED,
    MESSAGE_UPDATED,
    Event,
    transaction,
)

MAX_CONTENT = 4000
MAX_CLIENT_ID = 64
DEFAULT_PAGE = 50
MAX_PAGE = 200
MESSAGE_NOT_FOUND = "Message not found."
# Visible ASCII: client ids are opaque tokens (UUIDs, ULIDs, counters), never shown.
_CLIENT_ID = re.compile(rf"[\x21-\x7e]{{1,{MAX_CLIENT_ID}}}")


@dataclass(frozen=True, slots=True)
class Draft:
    """A message as checked before anything is written."""

    content: str
    client_id: str | None
    parts: Parts


async def post_message(
    app: web.Application,
    identity: Identity,
    channel_id: int,
    content: str,
    client_id: str | None = None,
    *,
    attachment_ids: Sequence[str] = (),
    links: Sequence[LinkIn] = (),
) -> tuple[Message, bool]:
    """Post as a member of the channel. Returns the message and whether it was created now:
    a retry with a client_id this author already used in this channel returns that message
    again (whatever the new content, and linking none of the new attachments) and publishes
    nothing. Once that message is deleted, the client_id is free again (deletes remove the
    row)."""
    draft = check_draft(content, client_id, check_parts(attachment_ids, links))
    take_send_token(app, identity)
    async with app[POOL].acquire() as conn, transaction(app, conn) as events:
        message, created = await write_message(conn, identity, channel_id, draft)
        if created:
            events.append(message_event(MESSAGE_CREATED, message))
    return message, created


def check_draft(
    content: str, client_id: str | None, parts: Parts | None = None, *, files_follow: bool = False
) -> Draft:
    """Text may be empty when the message carries attachments or links (or files that
    are still to be read, for the one-shot send, which checks again once they are)."""
    parts = parts or Parts()
    content = check_content(content, may_be_empty=bool(parts) or files_follow)
    if client_id is not None and not _CLIENT_ID.fullmatch(client_id):
        problem = f"must be 1-{MAX_CLIENT_ID} visible ASCII characters"
        raise InvalidRequest(details=[{"field": "client_id", "problem": problem}])
    return Draft(content, client_id, parts)


async def write_message(
    conn: asyncpg.Connection, identity: Identity, channel_id: int, draft: Draft
) -> tuple[Message, bool]:
    """Insert the message and link its attachments, inside the caller's transaction (any
    error must roll it back). Returns it with its attachments, and whether it is new."""
    access = await require_channel(conn, identity, channel_id)
    if not access.joined:
        raise Forbidden("Join the channel to post in it.", code="not_channel_member")
    message = await messages.insert_message(
        conn, channel_id, identity.user.id, draft.content, draft.client_id, draft.parts.links
    )
    created = message is not None
    if message is not None:
        await link_attachments(conn, message, draft.parts.attachment_ids)
    elif draft.client_id is not None:
        message = await messages.select_message_by_client_id(
            conn, identity.user.id, channel_id, draft.client_id
        )
    if message is None:  # removed from the channel since the check above
        raise NotFound(CHANNEL_NOT_FOUND)
    if not created or draft.parts.attachment_ids:  # a new text-only one has none to load
        (message,) = await with_attachments(conn, [message])
    return message, created


async def list_messages(
    app: web.Application,
    identity: Identity,
    channel_id: int,
    *,
    before: int | None = None,
    after: int | None = None,
    limit: int = DEFAULT_PAGE,
) -> tuple[list[Message], bool]:
    """A page of history and whether more lies beyond it. ``after`` pages forwards, oldest
    first; otherwise backwards from ``before`` (default: the latest), newest first."""
    if before is not None and after is not None:
        raise InvalidRequest("Give before or after, not both.")
    for field, value, low, high in (
        ("before", before, 0, MAX_ID),
        ("after", after, 0, MAX_ID),
        ("limit", limit, 1, MAX_PAGE),
    ):
        if value is not None and not low <= value <= high:
            raise InvalidRequest(details=[{"field": field, "problem": f"must be {low}-{high}"}])
    async with app[POOL].acquire() as conn:
        await require_channel(conn, identity, channel_id)
        if after is not None:
            page = await messages.select_messages_after(conn, channel_id, after, limit + 1)
        else:
            cursor = before if before is not None else MAX_ID
            page = await messages.select_messages_before(conn, channel_id, cursor, limit + 1)
        shown = await with_attachments(conn, page[:limit])
    return shown, len(page) > limit


async def edit_message(
    app: web.Application, identity: Identity, message_id: int, content: str
) -> Message:
    """Replace a message's text; only its author may. The text may become empty only when
    the message carries attachments or links."""
    content = check_content(content, may_be_empty=True)
    take_send_token(app, identity)  # edits fan out like posts, so they share the budget
    async with app[POOL].acquire() as conn, transaction(app, conn) as events:
        message, _access = await _visible_message(conn, identity, message_id)
        if message.author.id != identity.user.id:
            raise Forbidden("Only the author can edit a message.")
        found = await messages.update_message_content(conn, message_id, content)
        if found is None:  # deleted meanwhile
            raise NotFound(MESSAGE_NOT_FOUND)
        (updated,) = await with_attachments(conn, [found])
        if not (content.strip() or updated.links or updated.attachments):
            raise _empty_content()  # the update rolls back
        events.append(message_event(MESSAGE_UPDATED, updated))
    return updated


async def delete_message(app: web.Application, identity: Identity, message_id: int) -> None:
    """Delete a message for good, with its files: its author, or a workspace owner or admin.
    Rows first (their objects are queued in the same transaction), objects after the
    commit: no committed row ever points at a deleted object."""
    async with app[POOL].acquire() as conn, transaction(app, conn) as events:
        message, access = await _visible_message(conn, identity, message_id)
        if message.author.id != identity.user.id and access.role not in MANAGER_ROLES:
            raise Forbidden("Only the author or a workspace owner or admin can delete this.")
        keys = await attachments.delete_attachments_of_message(conn, message_id)
        if not await messages.delete_message(conn, message_id):
            raise NotFound(MESSAGE_NOT_FOUND)
        data = {"channel_id": message.channel_id, "message_id": message.id}
        events.append(Event(MESSAGE_DELETED, message.workspace_id, message.channel_id, data))
    await delete_objects(app, keys)


async def _visible_message(
    conn: asyncpg.Connection, identity: Identity, message_id: int
) -> tuple[Message, ChannelAccess]:
    message = await messages.select_message(conn, message_id)
    if message is None:
        raise NotFound(MESSAGE_NOT_FOUND)
    try:
        access = await require_channel(conn, identity, message.channel_id)
    except NotFound:
        raise NotFound(MESSAGE_NOT_FOUND) from None  # no hint that the message exists
    return message, access


def check_content(content: str, *, may_be_empty: bool) -> str:
    content = check_text(content, "content", max_length=MAX_CONTENT, multiline=True)
    if not may_be_empty and not content.strip():
        raise _empty_content()
    return content


def _empty_content() -> InvalidRequest:
    return InvalidRequest(details=[{"field": "content", "problem": "must not be empty"}])


def take_send_token(app: web.Application, identity: Identity) -> None:
    wait = app[MESSAGE_LIMITER].hit(identity.user.id)
    if wait:
        seconds = max(1, math.ceil(wait))
        raise TooManyRequests(
            "You are sending messages too fast; wait and try again.",
            details={"retry_after_seconds": seconds},
            headers={"Retry-After": str(seconds)},
        )


def message_event(kind: str, message: Message) -> Event:
    data = {"channel_id": message.channel_id, "message": message_json(message)}
    return Event(kind, message.workspace_id, message.channel_id, data)
