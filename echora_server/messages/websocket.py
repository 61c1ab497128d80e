"""The WebSocket endpoint ``/api/ws``: authenticate, subscribe, then serve frames.

Protocol (text frames, JSON):
- On connect the client is subscribed to every channel it belongs to (no explicit
  subscribe) and receives ``{"type": "hello", "user": {...}, "channel_ids": [...]}``.
- ``{"type": "message.send", "channel_id", "content", "client_id"?, "attachment_ids"?,
  "links"?, "ref"?}`` →
  ``{"type": "message.ack", "ref", "message": {...}}`` or
  ``{"type": "error", "ref", "error": {"code", "message"}}``.
- ``{"type": "resume", "after_id": N}`` (or ``?after_id=N`` on connect) → the messages
  the client missed, as ``message.created`` frames, then ``{"type": "resume.done"}``.
  Live events may interleave with the replay: clients de-duplicate by message id.
- ``{"type": "ping"}`` → ``{"type": "pong"}``.
Invalid JSON or an unknown type gets an error frame and the socket stays open; a binary
frame closes it with 1003, a frame over 64 KiB with 1009; shutdown closes with 1001.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import structlog
from aiohttp import WSCloseCode, WSMsgType, web
from pydantic import Field, ValidationError

from echora_server.accounts.shapes import user_json
from echora_server.auth.csrf import allowed_origins
from echora_server.auth.identity import require_identity
from echora_server.core.errors import (
    DATABASE_DOWN,
    ApiError,
    Forbidden,
    InvalidRequest,
    error_body,
    outage,
)
from echora_server.core.validation import Body
from echora_server.db import channels as channel_rows
from echora_server.db import messages as message_rows
from echora_server.keys import HUB, POOL
from echora_server.messages import service as chat
from echora_server.messages.extras import (
    MAX_ATTACHMENTS,
    MAX_LINKS,
    AttachmentId,
    LinkIn,
    with_attachments,
)
from echora_server.messages.shapes import message_json
from echora_server.realtime.hub import Client
from echora_server.storage.base import StorageError

log = structlog.get_logger("echora.ws")

MAX_FRAME = 64 * 1024
REPLY_CHUNK = 16 * 1024
HEARTBEAT = 25.0
RESUME_LIMIT = 1000


class SendFrame(Body):
    type: Literal["message.send"]
    channel_id: int = Field(ge=1)
    content: str = Field("", max_length=4000)
    client_id: str | None = Field(None, min_length=1, max_length=64)
    attachment_ids: list[AttachmentId] = Field(default_factory=list, max_length=MAX_ATTACHMENTS)
    links: list[LinkIn] = Field(default_factory=list, max_length=MAX_LINKS)
    ref: str | int | None = None


class ResumeFrame(Body):
    type: Literal["resume"]
    after_id: int = Field(ge=0)


def _frame(body: dict[str, Any]) -> str:
    return json.dumps(body, separators=(",", ":"))


def _error_frame(exc: ApiError, ref: Any = None) -> str:
    return _frame({"type": "error", "ref": ref, **error_body(exc.code, exc.message, exc.details)})


def _check_origin(request: web.Request) -> None:
    """Cookies ride along on cross-site WebSocket handshakes; browsers always send Origin."""
    if request.headers.get("Origin") not in allowed_origins(request):
        raise Forbidden("WebSocket origin not allowed.", code="origin_not_allowed")


async def websocket(request: web.Request) -> web.WebSocketResponse:
    identity = await require_identity(request)  # refused with a JSON 401 before any upgrade
    if identity.via == "session":
        _check_origin(request)
    # No per-message deflate: chat frames are a few hundred bytes, and compressing each one
    # once per socket costs more CPU than the whole rest of a delivery.
    # A small writer limit makes replies (a resume sends up to a thousand frames) wait for
    # the peer every 16 KiB instead of every 256 KiB, so they cannot fill the transport's
    # buffer that the hub counts against ECHORA_WS_SEND_BUFFER.
    ws = web.WebSocketResponse(
        heartbeat=HEARTBEAT, max_msg_size=MAX_FRAME, compress=False, writer_limit=REPLY_CHUNK
    )
    await ws.prepare(request)
    transport = request.transport
    if transport is None:  # the peer is already gone
        return ws
    hub = request.app[HUB]
    client = hub.connect(ws, identity, transport)
    try:
        try:
            async with request.app[POOL].acquire() as conn:
                channels = await channel_rows.select_channel_ids_for_user(
                    conn, identity.user.id, identity.token_workspace_id
                )
        except DATABASE_DOWN:
            log.warning("ws_subscribe_failed", exc_info=True)
            await ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"database unavailable")
            return ws
        hub.attach(client, channels, _hello)
        if "after_id" in request.query and request.query["after_id"].isdigit():
            await _resume(request.app, client, int(request.query["after_id"]))
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await _handle(request.app, client, msg.data)
            elif msg.type == WSMsgType.BINARY:
                await ws.close(code=WSCloseCode.UNSUPPORTED_DATA, message=b"text frames only")
    finally:
        await hub.disconnect(client)
    return ws


def _hello(client: Client) -> str:
    return _frame(
        {
            "type": "hello",
            "user": user_json(client.identity.user),
            "channel_ids": sorted(client.channels),
        }
    )


async def _resume(app: web.Application, client: Client, after_id: int) -> None:
    async with app[POOL].acquire() as conn:
        missed = await message_rows.select_messages_after_for_user(
            conn, client.user_id, after_id, RESUME_LIMIT + 1, client.identity.token_workspace_id
        )
        replayed = await with_attachments(conn, missed[:RESUME_LIMIT])
    for message in replayed:
        await client.reply(
            _frame(
                {
                    "type": "message.created",
                    "channel_id": message.channel_id,
                    "message": message_json(message),
                }
            )
        )
    await client.reply(
        _frame(
            {
                "type": "resume.done",
                "count": min(len(missed), RESUME_LIMIT),
                "has_more": len(missed) > RESUME_LIMIT,
            }
        )
    )


async def _handle(app: web.Application, client: Client, data: str) -> None:
    try:
        raw = json.loads(data)
    except ValueError:
        await client.reply(
            _error_frame(ApiError("The frame is not valid JSON.", code="invalid_json"))
        )
        return
    kind = raw.get("type") if isinstance(raw, dict) else None
    ref = raw.get("ref") if isinstance(raw, dict) else None
    try:
        if kind == "message.send":
            frame = SendFrame.model_validate(raw)
            message, _created = await chat.post_message(
                app,
                client.identity,
                frame.channel_id,
                frame.content,
                frame.client_id,
                attachment_ids=frame.attachment_ids,
                links=frame.links,
            )
            await client.reply(
                _frame({"type": "message.ack", "ref": frame.ref, "message": message_json(message)})
            )
        elif kind == "resume":
            await _resume(app, client, ResumeFrame.model_validate(raw).after_id)
        elif kind == "ping":
            await client.reply(_frame({"type": "pong", "ref": ref}))
        else:
            raise InvalidRequest(f"Unknown frame type {kind!r}.", code="unknown_type")
    except ValidationError as exc:
        details = [
            {"field": ".".join(map(str, e["loc"])), "problem": e["msg"]}
            for e in exc.errors(include_url=False, include_input=False)
        ]
        await client.reply(_error_frame(InvalidRequest(details=details), ref))
    except ApiError as exc:
        await client.reply(_error_frame(exc, ref))
    except (StorageError, *DATABASE_DOWN) as exc:
        log.warning("ws_frame_outage", exc_info=True)
        await client.reply(_error_frame(outage(exc), ref))
    except Exception:  # one bad frame must not take the socket down
        log.exception("ws_frame_failed", kind=kind)
        await client.reply(
            _error_frame(ApiError("Internal server error.", code="internal_error"), ref)
        )
