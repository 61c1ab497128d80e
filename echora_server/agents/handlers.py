"""Bots (owners and admins create them and set their delivery) and the inbox (bots poll and
acknowledge) over REST. The rules: ``agents.bots`` and ``agents.inbox``."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from aiohttp import web
from pydantic import ConfigDict, Field

from echora_server.accounts.service import USERNAME_PATTERN
from echora_server.agents.bot_files import BOT_FILES
from echora_server.agents.bots import BOT_NOT_FOUND, BOTS, MAX_DISPLAY_NAME
from echora_server.agents.callbacks import CALLBACK_URL_PATTERN, MAX_CALLBACK_URL
from echora_server.agents.inbox import INBOX, MAX_BATCH, MAX_WAIT
from echora_server.agents.shapes import Bot, InboxEntry, bot_json, entry_json
from echora_server.auth.access import WORKSPACE_NOT_FOUND
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
from echora_server.db.records import Delivery
from echora_server.files.handlers import FILE_PARTS
from echora_server.messages.shapes import Message, message_json

# Push needs a callback URL: the document says so, and the server refuses it otherwise
# (422 callback_url_required).
_PUSH_NEEDS_URL: dict[str, Any] = {
    "anyOf": [
        {"properties": {"delivery": {"enum": ["websocket", "poll"]}}},
        {"required": ["callback_url"], "properties": {"callback_url": {"type": "string"}}},
    ]
}
_CALLBACK_URL = Field(
    None,
    max_length=MAX_CALLBACK_URL,
    json_schema_extra={"pattern": CALLBACK_URL_PATTERN},
    description="Where push delivery POSTs entries: http(s), no user name or password.",
)


class CreateBotBody(Body):
    model_config = ConfigDict(json_schema_extra=_PUSH_NEEDS_URL)

    username: str = Field(
        min_length=1, max_length=64, json_schema_extra={"pattern": USERNAME_PATTERN}
    )
    display_name: str = Field(
        "", max_length=MAX_DISPLAY_NAME, json_schema_extra={"pattern": text_pattern()}
    )
    delivery: Delivery = "websocket"
    callback_url: str | None = _CALLBACK_URL


class DeliveryBody(Body):
    model_config = ConfigDict(json_schema_extra=_PUSH_NEEDS_URL)

    delivery: Delivery
    callback_url: str | None = _CALLBACK_URL


class InboxQuery(Query):
    limit: int = Field(10, ge=1, le=MAX_BATCH, description="Most entries to return.")
    wait: int = Field(
        0, ge=0, le=MAX_WAIT, description="Seconds to wait for an entry when there is none."
    )


class AckBody(Body):
    ids: list[Annotated[int, Field(ge=1, le=MAX_ID)]] = Field(min_length=1, max_length=MAX_BATCH)


_WEBHOOK_SECRET = "The push signing secret (whsec_…), shown only here"  # noqa: S105 (a label)


class NewBot(Shape):
    bot: Bot
    token: str = Field(description="The bot's API token, shown only here.")
    webhook_secret: str | None = Field(description=f"{_WEBHOOK_SECRET}; null unless push.")


class DeliverySet(Bot):
    webhook_secret: str | None = Field(
        description=f"{_WEBHOOK_SECRET}, when push was set for the first time; else null."
    )


class NewSecret(Shape):
    webhook_secret: str = Field(description=f"{_WEBHOOK_SECRET}; it signs from now on.")
    previous_secret_valid_until: dt.datetime | None = Field(
        description="Until then the previous secret signs too (a second v1 signature)."
    )


class Bots(Shape):
    bots: list[Bot]


class Inbox(Shape):
    entries: list[InboxEntry] = Field(description="Oldest first, leased.")


class Acked(Shape):
    acked: list[int]


class Sent(Shape):
    messages: list[Message] = Field(description="One per file, in the order sent.")


async def create_bot(request: web.Request) -> web.Response:
    identity = await require_identity(request)
    workspace_id = path_id(request, "workspace_id", WORKSPACE_NOT_FOUND)
    body = await read_json(request, CreateBotBody)
    bot, secret, webhook_secret = await request.app[BOTS].create(
        identity,
        workspace_id,
        body.username,
        display_name=body.display_name,
        delivery=body.delivery,
        callback_url=body.callback_url,
    )
    return web.json_response(
        {"bot": bot_json(bot), "token": secret, "webhook_secret": webhook_secret}, status=201
    )


async def list_bots(request: web.Request) -> web.Response:
    identity = await require_identity(request)
    workspace_id = path_id(request, "workspace_id", WORKSPACE_NOT_FOUND)
    found = await request.app[BOTS].list(identity, workspace_id)
    return web.json_response({"bots": [bot_json(view.bot, view.backlog) for view in found]})


async def get_bot(request: web.Request) -> web.Response:
    identity = await require_identity(request)
    bot_id = path_id(request, "bot_id", BOT_NOT_FOUND)
    view = await request.app[BOTS].get(identity, bot_id)
    return web.json_response(bot_json(view.bot, view.backlog))


async def set_bot_delivery(request: web.Request) -> web.Response:
    identity = await require_identity(request)
    bot_id = path_id(request, "bot_id", BOT_NOT_FOUND)
    body = await read_json(request, DeliveryBody)
    view, webhook_secret = await request.app[BOTS].set_delivery(
        identity, bot_id, body.delivery, body.callback_url
    )
    return web.json_response({**bot_json(view.bot, view.backlog), "webhook_secret": webhook_secret})


async def rotate_bot_secret(request: web.Request) -> web.Response:
    identity = await require_identity(request)
    bot_id = path_id(request, "bot_id", BOT_NOT_FOUND)
    secret, previous_until = await request.app[BOTS].rotate_secret(identity, bot_id)
    until = previous_until.isoformat() if previous_until is not None else None
    return web.json_response({"webhook_secret": secret, "previous_secret_valid_until": until})


async def poll_inbox(request: web.Request) -> web.Response:
    identity = await require_identity(request)
    query = read_query(request, InboxQuery)
    entries = await request.app[INBOX].poll(identity, query.limit, query.wait)
    return web.json_response({"entries": [entry_json(entry) for entry in entries]})


async def read_inbox_entry(request: web.Request) -> web.Response:
    identity = await require_identity(request)
    entry_id = path_id(request, "entry_id", ENTRY_NOT_FOUND)
    entry = await request.app[INBOX].entry(identity, entry_id)
    return web.json_response(entry_json(entry))


async def ack_inbox(request: web.Request) -> web.Response:
    identity = await require_identity(request)
    body = await read_json(request, AckBody)
    acked = await request.app[INBOX].ack(identity, body.ids)
    return web.json_response({"acked": acked})


async def send_bot_files(request: web.Request) -> web.Response:
    identity = await require_identity(request)  # before a single body byte is read
    bot_id = path_id(request, "bot_id", BOT_NOT_FOUND)
    posted = await request.app[BOT_FILES].send(request, identity, bot_id)
    return web.json_response({"messages": [message_json(m) for m in posted]}, status=201)


async def refuse_bot_files_early(request: web.Request) -> None:
    await require_identity(request)
    request.app[BOT_FILES].refuse_early(request)


_FILES_CONTENT = RequestContent(
    "Files as multipart/form-data, file parts only; all of them are stored, or none. "
    "No Content-Encoding.",
    {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file"],
                "properties": {"file": {**FILE_PARTS, "minItems": 1}},
                "additionalProperties": False,
            }
        }
    },
)


ENTRY_NOT_FOUND = "No such inbox entry (unknown, expired or not yours)."
_NOT_A_MANAGER = "Not an owner or admin of the workspace"
ROUTES: tuple[Route, ...] = (
    Route(
        "POST",
        "/api/workspaces/{workspace_id}/bots",
        create_bot,
        "Create a bot account (owners and admins); its token is shown once",
        "bots",
        body=CreateBotBody,
        responses={
            201: "Created",
            403: _NOT_A_MANAGER,
            404: "No such workspace of mine",
            409: "Username taken",
            422: "Invalid data; push without a callback_url (callback_url_required)",
        },
        schemas={201: NewBot},
    ),
    Route(
        "GET",
        "/api/workspaces/{workspace_id}/bots",
        list_bots,
        "List a workspace's bots (owners and admins)",
        "bots",
        responses={200: "OK", 403: _NOT_A_MANAGER, 404: "No such workspace of mine"},
        schemas={200: Bots},
    ),
    Route(
        "GET",
        "/api/bots/{bot_id}",
        get_bot,
        "A bot with its backlog and push state (owners and admins of its workspace)",
        "bots",
        responses={200: "OK", 403: _NOT_A_MANAGER, 404: "No such bot in a workspace of mine"},
        schemas={200: Bot},
    ),
    Route(
        "PATCH",
        "/api/bots/{bot_id}",
        set_bot_delivery,
        "Set a bot's delivery mode (owners and admins of its workspace); re-enables a "
        "callback disabled by a 410",
        "bots",
        body=DeliveryBody,
        responses={
            200: "Updated",
            403: _NOT_A_MANAGER,
            404: "No such bot in a workspace of mine",
            422: "Invalid data; push without a callback_url (callback_url_required)",
        },
        schemas={200: DeliverySet},
    ),
    Route(
        "POST",
        "/api/bots/{bot_id}/secret",
        rotate_bot_secret,
        "Rotate a bot's push signing secret (owners and admins); the previous one keeps "
        "signing for the overlap",
        "bots",
        responses={200: "Rotated", 403: _NOT_A_MANAGER, 404: "No such bot in a workspace of mine"},
        schemas={200: NewSecret},
    ),
    Route(
        "POST",
        "/api/bots/{bot_id}/files",
        send_bot_files,
        "Send files to a bot: a message per file in my direct message with it",
        "bots",
        request_content=_FILES_CONTENT,
        responses={
            201: "Sent: every file, or none",
            400: "Interrupted or malformed body",
            404: "No such bot in a workspace of mine",
            408: "The upload stalled (upload_timeout)",
            413: "A file over ECHORA_BOT_FILE_MAX_SIZE (file_too_large, details.limit_bytes), "
            "too many files, or (Expect: 100-continue) a Content-Length over any possible one",
            415: "Not multipart/form-data, Content-Encoding sent, or the content contradicts "
            "its declared image type",
            422: "Invalid fields, no file (no_files), or the bot itself (own_bot)",
            429: "Sending too fast (Retry-After)",
        },
        expect=refuse_bot_files_early,
        schemas={201: Sent},
    ),
    Route(
        "GET",
        "/api/inbox",
        poll_inbox,
        "Poll my inbox (bots): the oldest unacknowledged entries, leased; long-polls with wait",
        "bots",
        query=InboxQuery,
        responses={
            200: "OK (no entries when wait ran out)",
            403: "Not a bot",
            422: "Invalid query",
        },
        schemas={200: Inbox},
    ),
    Route(
        "POST",
        "/api/inbox/ack",
        ack_inbox,
        "Acknowledge inbox entries (bots); all or nothing, twice is fine",
        "bots",
        body=AckBody,
        responses={
            200: "Acknowledged",
            403: "Not a bot",
            404: "An id is no live entry of mine (details.ids); nothing was acknowledged",
        },
        schemas={200: Acked},
    ),
    Route(
        "GET",
        "/api/inbox/entries/{entry_id}",
        read_inbox_entry,
        "Read one live entry of my inbox (bots), acknowledged or not; leases nothing",
        "bots",
        responses={
            200: "The entry",
            403: "Not a bot",
            404: "No live entry of mine with this id (unknown, expired, swept or another's)",
        },
        schemas={200: InboxEntry},
    ),
)
