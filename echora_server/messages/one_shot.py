"""One-shot send for curl and bots: a message and its files in one multipart request.

``POST /api/channels/{channel_id}/messages`` as multipart/form-data: a ``content`` field
and an optional ``client_id`` first, then ``file`` parts. The files go through the upload
pipeline (echora_server/uploads.py) exactly like ``POST /api/upload`` with this channel
named, and their rows, the message and the links between them are written in ONE
transaction (``UploadBatch.commit_with``): if the message cannot be created, nothing is
committed and the batch deletes every object it stored (invariant 4, all or nothing).

The channel is authorised, and the fields checked, before a single file byte is stored.
"""

from __future__ import annotations

import dataclasses
from contextlib import aclosing

import asyncpg
from aiohttp import web

from echora_server.auth.access import require_channel
from echora_server.auth.identity import Identity
from echora_server.core.errors import Forbidden
from echora_server.db import messages
from echora_server.db.records import Attachment, Message
from echora_server.files.upload_body import UploadBody, UploadQuery
from echora_server.files.uploads import TooManyFiles, UploadTarget
from echora_server.keys import POOL, UPLOADER
from echora_server.messages import service as chat
from echora_server.messages.extras import MAX_ATTACHMENTS, Parts, with_attachments
from echora_server.realtime.events import MESSAGE_CREATED, Event, committed, stage

# Most bytes per field: 4 per character is the worst UTF-8 can need.
TEXT_FIELDS = {"content": chat.MAX_CONTENT * 4, "client_id": chat.MAX_CLIENT_ID}
# The channel is in the path; nothing is taken from the query string.
_NO_QUERY = UploadQuery.model_validate({})


class _PostedBefore(Exception):
    """A retried client_id: raised inside the transaction so it rolls back (and the files
    of this attempt are deleted); carries the message stored the first time."""

    def __init__(self, message: Message) -> None:
        super().__init__("posted before")
        self.message = message


async def post_message_with_files(
    request: web.Request, identity: Identity, channel_id: int
) -> tuple[Message, bool]:
    """Store the files, then post the message with them; see the module docstring."""
    app = request.app
    uploader = app[UPLOADER]
    target = await _authorize(app, identity, channel_id)
    body = await UploadBody.open(
        request, _NO_QUERY, uploader.limits.idle_timeout, text_fields=TEXT_FIELDS
    )
    await body.target()  # reads the leading text fields
    draft = chat.check_draft(body.text("content") or "", body.text("client_id"), files_follow=True)
    chat.take_send_token(app, identity)
    if (earlier := await _posted_before(app, identity, channel_id, draft)) is not None:
        return earlier, False  # a retry: its files are not even read

    events: list[Event] = []

    async def write(conn: asyncpg.Connection, rows: list[Attachment]) -> Message:
        parts = Parts(attachment_ids=tuple(row.id for row in rows))
        if not rows:  # no file after all: the text must stand on its own
            chat.check_content(draft.content, may_be_empty=False)
        message, created = await chat.write_message(
            conn, identity, channel_id, dataclasses.replace(draft, parts=parts)
        )
        if not created:  # the same client_id won a race since _posted_before
            raise _PostedBefore(message)
        events.append(chat.message_event(MESSAGE_CREATED, message))
        await stage(app, conn, events)
        return message

    try:
        async with (
            uploader.batch(target, identity.user.id) as batch,
            aclosing(body.files()) as files,
        ):
            count = 0
            async for incoming in files:
                if count == MAX_ATTACHMENTS:  # a message's limit, below the upload's maybe
                    raise TooManyFiles(details={"limit_files": MAX_ATTACHMENTS})
                await batch.add(incoming)
                count += 1
            message = await batch.commit_with(write)
    except _PostedBefore as retried:
        return retried.message, False
    await committed(app, events)
    return message, True


async def _authorize(app: web.Application, identity: Identity, channel_id: int) -> UploadTarget:
    async with app[POOL].acquire() as conn:
        access = await require_channel(conn, identity, channel_id)
    if not access.joined:
        raise Forbidden("Join the channel to post in it.", code="not_channel_member")
    return UploadTarget(access.channel.workspace_id, access.channel.id)


async def _posted_before(
    app: web.Application, identity: Identity, channel_id: int, draft: chat.Draft
) -> Message | None:
    if draft.client_id is None:
        return None
    async with app[POOL].acquire() as conn:
        found = await messages.select_message_by_client_id(
            conn, identity.user.id, channel_id, draft.client_id
        )
        return (await with_attachments(conn, [found]))[0] if found else None
