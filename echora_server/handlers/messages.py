"""Messages over REST (the rules are in echora_server/chat.py, shared with the WebSocket)."""

from __future__ import annotations

from aiohttp import web
from pydantic import ConfigDict, Field

from echora_server import chat, message_uploads
from echora_server.auth.access import CHANNEL_NOT_FOUND
from echora_server.auth.identity import require_identity
from echora_server.message_parts import MAX_ATTACHMENTS, MAX_LINKS, AttachmentId, LinkIn
from echora_server.serialize import message_json
from echora_server.validation import MAX_ID, Body, Query, path_id, read_json, read_query


class PostMessageBody(Body):
    # Whitespace is content here (indented code, blank lines): never strip it.
    model_config = ConfigDict(str_strip_whitespace=False)

    content: str = Field(
        "", max_length=chat.MAX_CONTENT, description="May be empty with attachments or links."
    )
    client_id: str | None = Field(
        None,
        min_length=1,
        max_length=chat.MAX_CLIENT_ID,
        description="Chosen by the client; a retry with the same value posts nothing new.",
    )
    attachment_ids: list[AttachmentId] = Field(
        default_factory=list,
        max_length=MAX_ATTACHMENTS,
        description="My unlinked uploads (POST /api/upload), in the order to show them.",
    )
    links: list[LinkIn] = Field(default_factory=list, max_length=MAX_LINKS)


class EditMessageBody(Body):
    model_config = ConfigDict(str_strip_whitespace=False)

    content: str = Field(max_length=chat.MAX_CONTENT)


class MessagesQuery(Query):
    before: int | None = Field(
        None, ge=0, le=MAX_ID, description="Messages with smaller ids, newest first."
    )
    after: int | None = Field(
        None, ge=0, le=MAX_ID, description="Messages with larger ids, oldest first."
    )
    limit: int = Field(chat.DEFAULT_PAGE, ge=1, le=chat.MAX_PAGE, description="Page size.")


async def post_message(request: web.Request) -> web.Response:
    """JSON, or multipart/form-data with the files to upload and attach (one-shot)."""
    identity = await require_identity(request)  # before a single body byte is read
    channel_id = path_id(request, "channel_id", CHANNEL_NOT_FOUND)
    if request.content_type == "multipart/form-data":
        message, created = await message_uploads.post_message_with_files(
            request, identity, channel_id
        )
    else:
        body = await read_json(request, PostMessageBody)
        message, created = await chat.post_message(
            request.app,
            identity,
            channel_id,
            body.content,
            body.client_id,
            attachment_ids=body.attachment_ids,
            links=body.links,
        )
    return web.json_response(message_json(message), status=201 if created else 200)


async def list_messages(request: web.Request) -> web.Response:
    identity = await require_identity(request)
    channel_id = path_id(request, "channel_id", CHANNEL_NOT_FOUND)
    query = read_query(request, MessagesQuery)
    page, has_more = await chat.list_messages(
        request.app, identity, channel_id, before=query.before, after=query.after, limit=query.limit
    )
    return web.json_response({"messages": [message_json(m) for m in page], "has_more": has_more})


async def edit_message(request: web.Request) -> web.Response:
    identity = await require_identity(request)
    message_id = path_id(request, "message_id", chat.MESSAGE_NOT_FOUND)
    body = await read_json(request, EditMessageBody)
    message = await chat.edit_message(request.app, identity, message_id, body.content)
    return web.json_response(message_json(message))


async def delete_message(request: web.Request) -> web.Response:
    identity = await require_identity(request)
    message_id = path_id(request, "message_id", chat.MESSAGE_NOT_FOUND)
    await chat.delete_message(request.app, identity, message_id)
    return web.Response(status=204)
