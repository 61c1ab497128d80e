"""Messages over REST (the rules: ``messages.service``, shared with the WebSocket)."""

from __future__ import annotations

from aiohttp import web
from pydantic import ConfigDict, Field

from echora_server.auth.access import CHANNEL_NOT_FOUND
from echora_server.auth.identity import require_identity
from echora_server.core.route import RequestContent, Route
from echora_server.core.shapes import Shape
from echora_server.core.validation import (
    MAX_ID,
    Body,
    Query,
    path_id,
    read_json,
    read_query,
    text_pattern,
)
from echora_server.files.handlers import FILE_PARTS, refuse_upload_early
from echora_server.files.upload_body import BodyTooLarge
from echora_server.files.uploads import UPLOADS
from echora_server.messages.drafts import (
    CLIENT_ID_PATTERN,
    MAX_ATTACHMENTS,
    MAX_CLIENT_ID,
    MAX_CONTENT,
    NewMessage,
)
from echora_server.messages.one_shot import post_message_with_files
from echora_server.messages.service import DEFAULT_PAGE, MAX_PAGE, MESSAGE_NOT_FOUND, MESSAGES
from echora_server.messages.shapes import Message, message_json


class PostMessageBody(NewMessage):
    """The JSON body of a post; a WebSocket ``message.send`` frame carries the same."""


class EditMessageBody(Body):
    model_config = ConfigDict(str_strip_whitespace=False)  # whitespace is content

    content: str = Field(
        max_length=MAX_CONTENT,
        description="May be empty if the message has attachments or links.",
        json_schema_extra={"pattern": text_pattern(multiline=True)},
    )


class MessagesQuery(Query):
    before: int | None = Field(
        None,
        ge=0,
        le=MAX_ID,
        description="Messages with smaller ids, newest first (not with after).",
    )
    after: int | None = Field(
        None,
        ge=0,
        le=MAX_ID,
        description="Messages with larger ids, oldest first (not with before).",
    )
    limit: int = Field(DEFAULT_PAGE, ge=1, le=MAX_PAGE, description="Page size.")


class MessagePage(Shape):
    messages: list[Message]
    has_more: bool = Field(description="More messages lie beyond this page.")


async def post_message(request: web.Request) -> web.Response:
    """JSON, or multipart/form-data with the files to upload and attach (one-shot)."""
    identity = await require_identity(request)  # before a single body byte is read
    channel_id = path_id(request, "channel_id", CHANNEL_NOT_FOUND)
    messages = request.app[MESSAGES]
    if request.content_type == "multipart/form-data":
        message, created = await post_message_with_files(
            request, identity, channel_id, messages, request.app[UPLOADS]
        )
    else:
        body = await read_json(request, PostMessageBody)
        message, created = await messages.post_message(identity, channel_id, body.draft())
    return web.json_response(message_json(message), status=201 if created else 200)


async def refuse_post_early(request: web.Request) -> None:
    """Before ``100 Continue``: an upload's checks, or a JSON body's size."""
    if request.content_type == "multipart/form-data":
        await refuse_upload_early(request)
        return
    await require_identity(request)
    length = request.content_length
    if length is not None and length > request.client_max_size:
        raise BodyTooLarge(details={"limit_bytes": request.client_max_size})


async def list_messages(request: web.Request) -> web.Response:
    identity = await require_identity(request)
    channel_id = path_id(request, "channel_id", CHANNEL_NOT_FOUND)
    query = read_query(request, MessagesQuery)
    page, has_more = await request.app[MESSAGES].list_messages(
        identity, channel_id, before=query.before, after=query.after, limit=query.limit
    )
    return web.json_response({"messages": [message_json(m) for m in page], "has_more": has_more})


async def edit_message(request: web.Request) -> web.Response:
    identity = await require_identity(request)
    message_id = path_id(request, "message_id", MESSAGE_NOT_FOUND)
    body = await read_json(request, EditMessageBody)
    message = await request.app[MESSAGES].edit_message(identity, message_id, body.content)
    return web.json_response(message_json(message))


async def delete_message(request: web.Request) -> web.Response:
    identity = await require_identity(request)
    message_id = path_id(request, "message_id", MESSAGE_NOT_FOUND)
    await request.app[MESSAGES].delete_message(identity, message_id)
    return web.Response(status=204)


# The multipart shape of POST .../messages, documented beside its JSON body.
ONE_SHOT_CONTENT = RequestContent(
    "JSON (PostMessageBody), or multipart/form-data for a one-shot send: the content and "
    "client_id fields first, then file fields; the files are uploaded into this channel and "
    "attached, all or nothing. No Content-Encoding.",
    {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {
                    "content": {
                        "type": "string",
                        "maxLength": MAX_CONTENT,
                        "pattern": text_pattern(multiline=True),
                    },
                    "client_id": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": MAX_CLIENT_ID,
                        "pattern": CLIENT_ID_PATTERN,
                    },
                    "file": {**FILE_PARTS, "maxItems": MAX_ATTACHMENTS},
                },
                "additionalProperties": False,
                # Some text, or a file.
                "anyOf": [
                    {
                        "required": ["content"],
                        "properties": {
                            "content": {"pattern": text_pattern(multiline=True, blank=False)}
                        },
                    },
                    {"required": ["file"], "properties": {"file": {"minItems": 1}}},
                ],
            },
        },
    },
)

ROUTES: tuple[Route, ...] = (
    Route(
        "POST",
        "/api/channels/{channel_id}/messages",
        post_message,
        "Post a message with my uploads and links (idempotent per client_id); or, as "
        "multipart/form-data, upload files and post them in one request",
        "messages",
        body=PostMessageBody,
        request_content=ONE_SHOT_CONTENT,
        responses={
            201: "Posted",
            200: "Posted before with this client_id: the same message",
            403: "I am not in the channel",
            404: "No such channel visible to me",
            408: "Multipart: the upload stalled (upload_idle_timeout)",
            409: "An attachment of mine is already in a message (attachment_already_linked)",
            413: "Multipart: a file is too large, or too many files; or (Expect: "
            "100-continue) a Content-Length over any possible body",
            415: "Neither JSON nor multipart, a file contradicts its declared image type, or "
            "the workspace does not accept its type (type_not_allowed)",
            422: "Invalid fields, or an attachment that is not mine, not in this workspace or "
            "channel, or missing: all answer attachment_unavailable",
            429: "Sending too fast (Retry-After)",
            507: "Multipart: a storage quota has no room for the files (quota_exceeded)",
        },
        expect=refuse_post_early,
        schemas={201: Message, 200: Message},
    ),
    Route(
        "GET",
        "/api/channels/{channel_id}/messages",
        list_messages,
        "A page of history: newest first (before / latest), oldest first (after)",
        "messages",
        query=MessagesQuery,
        responses={
            200: "OK",
            404: "No such channel visible to me",
            422: "Invalid query, or both before and after",
        },
        schemas={200: MessagePage},
    ),
    Route(
        "PATCH",
        "/api/messages/{message_id}",
        edit_message,
        "Edit my message",
        "messages",
        body=EditMessageBody,
        responses={
            200: "Edited",
            403: "Not the author",
            404: "No such message visible to me",
            429: "Sending too fast (Retry-After)",
        },
        schemas={200: Message},
    ),
    Route(
        "DELETE",
        "/api/messages/{message_id}",
        delete_message,
        "Delete a message (its author, or workspace owners and admins)",
        "messages",
        responses={204: "Deleted", 403: "Not allowed", 404: "No such message visible to me"},
    ),
)
