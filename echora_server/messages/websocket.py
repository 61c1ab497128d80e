"""The WebSocket endpoint ``/api/ws`` (protocol: docs/websocket.md): authenticate, subscribe,
then serve frames. A bad frame gets an error frame and the socket stays open."""

from __future__ import annotations

import json
import time
from typing import Any, Literal

import structlog
from aiohttp import WSCloseCode, WSMsgType, web
from pydantic import Field, ValidationError

from echora_server.accounts.shapes import user_json
from echora_server.auth.access import CHANNEL_NOT_FOUND
from echora_server.auth.csrf import allowed_origins, log_refused_origin
from echora_server.auth.identity import require_identity
from echora_server.channels.service import CHANNELS
from echora_server.core.errors import (
    ApiError,
    Forbidden,
    InvalidRequest,
    NotFound,
    error_body,
    unavailable,
)
from echora_server.core.route import Route
from echora_server.core.validation import MAX_ID, Body, Query, loads, validation_details
from echora_server.messages.drafts import NewMessage
from echora_server.messages.service import MESSAGES, MessageService
from echora_server.messages.shapes import message_json
from echora_server.presence.service import PRESENCE, PresenceService, Snapshot
from echora_server.realtime.events import TYPING, Event
from echora_server.realtime.hub import HUB, Subscriber

log = structlog.get_logger("echora.ws")

MAX_FRAME = 64 * 1024
REPLY_CHUNK = 16 * 1024
HEARTBEAT = 25.0
RESUME_LIMIT = 1000
# A client repeats "typing" while the person types; one event per channel this often.
TYPING_EVERY = 2.0


class SendFrame(NewMessage):
    type: Literal["message.send"]
    channel_id: int = Field(ge=1, le=MAX_ID)
    ref: str | int | None = None


class TypingFrame(Body):
    type: Literal["typing"]
    channel_id: int = Field(ge=1, le=MAX_ID)
    ref: str | int | None = None


class PresenceFrame(Body):
    type: Literal["presence"]
    status: Literal["online", "away"]
    ref: str | int | None = None


class ResumeFrame(Body):
    type: Literal["resume"]
    after_id: int = Field(ge=0, le=MAX_ID)


def _frame(body: dict[str, Any]) -> str:
    return json.dumps(body, separators=(",", ":"))


def _error_frame(exc: ApiError, ref: Any = None) -> str:
    return _frame({"type": "error", "ref": ref, **error_body(exc.code, exc.message, exc.details)})


def _check_origin(request: web.Request) -> None:
    """Cookies ride along on cross-site handshakes; browsers always send Origin."""
    if request.headers.get("Origin") not in allowed_origins(request):
        log_refused_origin(request)
        raise Forbidden("WebSocket origin not allowed.", code="origin_not_allowed")


async def websocket(request: web.Request) -> web.WebSocketResponse:
    identity = await require_identity(request)  # refused with a JSON 401 before any upgrade
    if identity.via == "session":
        _check_origin(request)
    # No deflate: per-socket compression of small frames costs more than sending them. The
    # writer limit makes long replies wait for the peer, not fill the buffer the hub watches.
    ws = web.WebSocketResponse(
        heartbeat=HEARTBEAT, max_msg_size=MAX_FRAME, compress=False, writer_limit=REPLY_CHUNK
    )
    await ws.prepare(request)
    transport = request.transport
    if transport is None:  # the peer is already gone
        return ws
    hub, messages, presence = request.app[HUB], request.app[MESSAGES], request.app[PRESENCE]
    watch = request.query.get("presence", "") in ("1", "true")
    subscriber = hub.connect(ws, identity, transport)
    try:
        try:
            channels = await request.app[CHANNELS].subscriptions(identity)
            snapshot = await presence.watch(subscriber) if watch else None
        except Exception as exc:
            if unavailable(exc) is None:
                raise
            log.warning("ws_subscribe_failed", exc_info=True)
            await ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"database unavailable")
            return ws
        hub.attach(subscriber, channels, lambda s: _hello(s, snapshot))
        presence.connected(subscriber)
        after_id = request.query.get("after_id", "")
        if after_id.isdigit() and int(after_id) <= MAX_ID:  # else not a message id: no gap
            await _resume(messages, subscriber, int(after_id))
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await _handle(messages, presence, subscriber, msg.data)
            elif msg.type == WSMsgType.BINARY:
                await ws.close(code=WSCloseCode.UNSUPPORTED_DATA, message=b"text frames only")
    finally:
        presence.disconnected(subscriber)
        await hub.disconnect(subscriber)
    return ws


def _hello(subscriber: Subscriber, presence: Snapshot | None) -> str:
    user = user_json(subscriber.identity.user)
    body = {"type": "hello", "user": user, "channel_ids": sorted(subscriber.channels)}
    if presence is not None:
        body["presence"] = presence
    return _frame(body)


async def _resume(messages: MessageService, subscriber: Subscriber, after_id: int) -> None:
    missed, more = await messages.missed_messages(subscriber.identity, after_id, RESUME_LIMIT)
    for message in missed:
        await subscriber.reply(
            _frame(
                {
                    "type": "message.created",
                    "channel_id": message.channel_id,
                    "message": message_json(message),
                }
            )
        )
    await subscriber.reply(_frame({"type": "resume.done", "count": len(missed), "has_more": more}))


async def _typing(messages: MessageService, subscriber: Subscriber, channel_id: int) -> None:
    """Told to the channel's sockets, stored nowhere; at most one per channel per
    ``TYPING_EVERY`` seconds per socket (the rest are dropped without a word)."""
    workspace_id = subscriber.channels.get(channel_id)
    if workspace_id is None:  # not subscribed: not a member, or not any more
        raise NotFound(CHANNEL_NOT_FOUND)
    now = time.monotonic()
    if now - subscriber.typed.get(channel_id, -TYPING_EVERY) < TYPING_EVERY:
        return
    subscriber.typed[channel_id] = now
    user = subscriber.identity.user
    data = {"channel_id": channel_id, "user_id": user.id, "username": user.username}
    await messages.bus.publish_ephemeral(
        Event(TYPING, workspace_id, channel_id, data, user_id=user.id)
    )


async def _handle(
    messages: MessageService, presence: PresenceService, subscriber: Subscriber, data: str
) -> None:
    try:
        raw = loads(data)
    except ValueError:
        await subscriber.reply(
            _error_frame(ApiError("The frame is not valid JSON.", code="invalid_json"))
        )
        return
    kind = raw.get("type") if isinstance(raw, dict) else None
    ref = raw.get("ref") if isinstance(raw, dict) else None
    try:
        if kind == "message.send":
            frame = SendFrame.model_validate(raw)
            message, _created = await messages.post_message(
                subscriber.identity, frame.channel_id, frame.draft()
            )
            ack = {"type": "message.ack", "ref": frame.ref, "message": message_json(message)}
            await subscriber.reply(_frame(ack))
        elif kind == "resume":
            await _resume(messages, subscriber, ResumeFrame.model_validate(raw).after_id)
        elif kind == "typing":
            await _typing(messages, subscriber, TypingFrame.model_validate(raw).channel_id)
        elif kind == "presence":
            frame_ = PresenceFrame.model_validate(raw)
            presence.set_away(subscriber, frame_.status == "away")
        elif kind == "ping":
            await subscriber.reply(_frame({"type": "pong", "ref": ref}))
        else:
            raise InvalidRequest(f"Unknown frame type {kind!r}.", code="unknown_type")
    except ValidationError as exc:
        await subscriber.reply(_error_frame(InvalidRequest(details=validation_details(exc)), ref))
    except ApiError as exc:
        await subscriber.reply(_error_frame(exc, ref))
    except Exception as exc:  # one bad frame must not take the socket down
        answer = unavailable(exc)
        if answer is None:
            log.exception("ws_frame_failed", kind=kind)
            answer = ApiError("Internal server error.", code="internal_error")
        else:
            log.warning("ws_frame_outage", exc_info=True)
        await subscriber.reply(_error_frame(answer, ref))


class WebSocketQuery(Query):
    """The handshake's options (read leniently: a value out of range is ignored)."""

    presence: Literal["1", "true", "0", "false"] = Field(
        "0", description="1 or true: presence events, and a presence snapshot in hello"
    )
    after_id: int | None = Field(
        None,
        ge=0,
        le=MAX_ID,
        description="Resume: the messages after this id in my channels follow hello",
    )


ROUTES: tuple[Route, ...] = (
    Route(
        "GET",
        "/api/ws",
        websocket,
        "WebSocket: live events, message.send, resume, typing, presence (protocol: "
        "docs/websocket.md; ?presence=1 for presence events)",
        "messages",
        query=WebSocketQuery,
        responses={
            101: "Switching protocols",
            401: "Not authenticated",
            403: "Cookie login from an origin that is not allowed",
        },
    ),
)
