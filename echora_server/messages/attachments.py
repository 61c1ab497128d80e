"""Attachments in messages: each links once, by its uploader, within its workspace (and channel),
in the transaction inserting the message. Someone else's, another workspace's and missing ones
all answer the same 422 (no hint they exist); the caller's own already-linked ones answer 409."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import asyncpg

from echora_server.audit.record import origin
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
    """Link all of ``ids`` to the new message or raise, rolling the caller's transaction back."""
    if not ids:
        return
    author, workspace_id = message.author.id, message.workspace_id
    try:
        here = origin()
        linked = await attachments.link_attachments(
            conn,
            ids,
            author,
            workspace_id,
            message.channel_id,
            message.id,
            (here.request_id, here.client_addr),
        )
    except asyncpg.DeadlockDetectedError:
        # Two sends racing for overlapping attachments: one loses.
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
