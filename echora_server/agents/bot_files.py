"""Files straight to a bot, in one multipart request: every file, or none. They land in the
direct message of the sender and the bot (``channels.direct``, opened on first use), one
message per file, so each file is one event: one inbox entry for a push- or poll-mode bot,
one ``message.created`` on a WebSocket-mode bot's socket. Who may read them is then the
usual rule: the two members. Stored, typed and named as uploads are (``files.uploads``), under
their own per-file cap (``ECHORA_BOT_FILE_MAX_SIZE``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing

import asyncpg
from aiohttp import web

from echora_server.agents.bots import BOT_NOT_FOUND
from echora_server.auth.access import require_direct_members
from echora_server.auth.identity import Identity
from echora_server.channels.direct import open_direct
from echora_server.config import CONFIG
from echora_server.core.errors import ApiError, InvalidRequest, NotFound
from echora_server.db import bots
from echora_server.db.pool import POOL
from echora_server.db.records import Attachment, Bot, Message, User
from echora_server.files.upload_body import (
    TargetFields,
    UploadBody,
    UploadQuery,
    refuse_before_body,
)
from echora_server.files.uploads import UPLOADS, UploadService
from echora_server.messages.drafts import Draft
from echora_server.messages.service import MESSAGES, MessageService, message_event, write_message
from echora_server.realtime.events import MESSAGE_CREATED, Event

_NO_QUERY = UploadQuery.model_validate({})


class BotFileService:
    def __init__(
        self, pool: asyncpg.Pool, uploads: UploadService, messages: MessageService, max_bytes: int
    ) -> None:
        self._pool = pool
        self._uploads = uploads
        self._messages = messages
        self.max_bytes = max_bytes

    def refuse_early(self, request: web.Request) -> None:
        """What the headers alone rule out (``Expect: 100-continue``)."""
        refuse_before_body(
            request,
            max_bytes=self.max_bytes,
            max_files=self._uploads.limits.max_files,
            store_down=self._uploads.storage.availability.known_down,
        )

    async def send(self, request: web.Request, identity: Identity, bot_id: int) -> list[Message]:
        """The messages posted, one per file in the order sent. Checked before a file byte is
        stored: the media type, the bot, the fields before the first file."""
        if request.content_type != "multipart/form-data":
            raise ApiError(
                "Send the files as multipart/form-data.", code="unsupported_media_type"
            ).with_status(415)
        bot, members = await self._recipient(identity, bot_id)
        uploads = self._uploads
        body = await UploadBody.open(request, _NO_QUERY, uploads.limits.idle_timeout)
        fields = await body.target()
        if fields.channel_id is not None or fields.workspace_id is not None:
            field = "channel_id" if fields.channel_id is not None else "workspace_id"
            raise InvalidRequest(details=[{"field": field, "problem": "unknown field"}])
        self._messages.take_send_token(identity)
        events: list[Event] = []

        async def write(conn: asyncpg.Connection, rows: list[Attachment]) -> list[Message]:
            channel, _ = await open_direct(
                conn, bot.workspace_id, identity.user.id, members, events
            )
            posted = []
            for row in rows:
                draft = Draft(content="", client_id=None, attachment_ids=(row.id,))
                message, _ = await write_message(conn, identity, channel.id, draft)
                events.append(message_event(MESSAGE_CREATED, message))
                posted.append(message)
            await self._messages.bus.stage(conn, events)
            return posted

        # The workspace's upload policy and quotas apply as to any upload into it.
        target = await uploads.target(identity, TargetFields(None, bot.workspace_id))
        async with (
            uploads.batch(target, identity.user.id, max_bytes=self.max_bytes) as batch,
            aclosing(body.files()) as files,
        ):
            count = 0
            async for incoming in files:
                await batch.add(incoming)
                count += 1
            if not count:
                raise InvalidRequest("Send at least one file.", code="no_files")
            posted = await batch.commit_with(write)
        await self._messages.bus.committed(events)
        return posted

    async def _recipient(self, identity: Identity, bot_id: int) -> tuple[Bot, list[User]]:
        """A bot of one of the caller's workspaces, and the pair; any other id is not found."""
        async with self._pool.acquire() as conn:
            bot = await bots.select_bot(conn, bot_id)
            if bot is None:
                raise NotFound(BOT_NOT_FOUND)
            if bot.user.id == identity.user.id:
                raise InvalidRequest("A bot cannot send files to itself.", code="own_bot")
            try:
                members = await require_direct_members(
                    conn, identity, bot.workspace_id, [bot.user.id]
                )
            except NotFound:  # not my workspace, or the bot left it
                raise NotFound(BOT_NOT_FOUND) from None
        return bot, members


BOT_FILES = web.AppKey("bot_files", BotFileService)


async def bot_files_ctx(app: web.Application) -> AsyncIterator[None]:
    max_bytes = app[CONFIG].bot_file_max_size
    app[BOT_FILES] = BotFileService(app[POOL], app[UPLOADS], app[MESSAGES], max_bytes)
    yield
