"""Attachments in messages: linked in the transaction that inserts the message, loaded
with every read.

Linking keeps "link once, same scope": an attachment goes from unlinked to one message at
most once, only by its uploader, only within its workspace (and channel, when the upload
named one). A shortfall raises, rolling the message back. Someone else's, another
workspace's and missing attachments all answer 422 ``attachment_unavailable``; only the
caller's own already-linked uploads answer 409 ``attachment_already_linked``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import asyncpg

from echora_server.core.errors import ApiError
from echora_server.db import attachments
from echora_server.db.records import Message


class AttachmentUnavailable(ApiError):
    status = 422
    code = "attachment_unavailable"
    message = "An attachment cannot be added to this message."


class AttachmentAlreadyLinked(ApiError):
    status = 409
    code = "attachment_already_linked"
    message = "An attachment is already part of a message."


async def link_attachments(conn: asyncpg.Connection, message: Message, ids: Sequence[str]) -> None:
    """Link every one of ``ids`` to the just-inserted ``message``, or raise (the caller's
    transaction then rolls the message back)."""
    if not ids:
        return
    author, workspace_id = message.author.id, message.workspace_id
    try:
        linked = await attachments.link_attachments(
            conn, ids, author, workspace_id, message.channel_id, message.id
        )
    except asyncpg.DeadlockDetectedError:
        # Two sends racing for overlapping attachments in different orders: one loses.
        raise AttachmentAlreadyLinked() from None
    if len(linked) == len(ids):
        return
    missed = [i for i in ids if i not in set(linked)]
    own = await attachments.select_own_linked_ids(conn, missed, author, workspace_id)
    if len(own) == len(missed):
        raise AttachmentAlreadyLinked(details={"attachment_ids": own})
    raise AttachmentUnavailable()


async def with_attachments(conn: asyncpg.Connection, messages: Sequence[Message]) -> list[Message]:
    """The messages with their attachments, loaded in one query for the whole page."""
    found = await attachments.select_attachments_of_messages(conn, [m.id for m in messages])
    return [replace(m, attachments=tuple(found.get(m.id, ()))) for m in messages]
