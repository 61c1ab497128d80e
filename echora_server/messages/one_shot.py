"""One-shot send for curl and bots: a message and its files in one multipart request. Channel and
fields are checked before a file byte is stored; file rows, message and links commit in one
transaction, or nothing does and every stored object is deleted."""

from __future__ import annotations

import dataclasses
from contextlib import aclosing

import asyncpg
from aiohttp import web

from echora_server.auth.identity import Identity
from echora_server.db.records import Attachment, Message
from echora_server.files.upload_body import UploadBody, UploadQuery
from echora_server.files.uploads import TooManyFiles, UploadService, UploadTarget
from echora_server.messages.drafts import (
    MAX_ATTACHMENTS,
    MAX_CLIENT_ID,
    MAX_CONTENT,
    check_content,
    check_draft,
)
from echora_server.messages.service import MessageService, message_event, write_message
from echora_server.realtime.events import MESSAGE_CREATED, Event

# Most bytes per field: 4 per character is the worst UTF-8 can need.
TEXT_FIELDS = {"content": MAX_CONTENT * 4, "client_id": MAX_CLIENT_ID}
# The channel is in the path; nothing is taken from the query string.
_NO_QUERY = UploadQuery.model_validate({})


class _PostedBefore(Exception):
    """A retried client_id, raised inside the transaction so it rolls back with this attempt's
    files; carries the message stored the first time."""

    def __init__(self, message: Message) -> None:
        super().__init__("posted before")
        self.message = message


async def post_message_with_files(
    request: web.Request,
    identity: Identity,
    channel_id: int,
    messages: MessageService,
    uploads: UploadService,
) -> tuple[Message, bool]:
    """The message, and whether it was created now (as ``MessageService.post_message``)."""
    target = await _authorize(uploads, identity, channel_id)
    body = await UploadBody.open(
        request, _NO_QUERY, uploads.limits.idle_timeout, text_fields=TEXT_FIELDS
    )
    await body.target()  # reads the leading text fields
    draft = check_draft(body.text("content") or "", body.text("client_id"), files_follow=True)
    messages.take_send_token(identity)
    if draft.client_id is not None:
        earlier = await messages.posted_before(identity, channel_id, draft.client_id)
        if earlier is not None:
            return earlier, False  # a retry: its files are not even read

    events: list[Event] = []

    async def write(conn: asyncpg.Connection, rows: list[Attachment]) -> Message:
        if not rows:  # no file after all: the text must stand on its own
            check_content(draft.content, may_be_empty=False)
        ids = tuple(row.id for row in rows)
        message, created = await write_message(
            conn, identity, channel_id, dataclasses.replace(draft, attachment_ids=ids)
        )
        if not created:  # the same client_id won a race since posted_before
            raise _PostedBefore(message)
        events.append(message_event(MESSAGE_CREATED, message))
        await messages.bus.stage(conn, events)
        return message

    try:
        async with (
            uploads.batch(target, identity.user.id) as batch,
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
    await messages.bus.committed(events)
    return message, True


async def _authorize(uploads: UploadService, identity: Identity, channel_id: int) -> UploadTarget:
    return await uploads.channel_target(identity, channel_id, "Join the channel to post in it.")
