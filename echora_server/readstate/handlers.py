"""Read positions over REST (the rules: ``readstate.service``)."""

from __future__ import annotations

from aiohttp import web
from pydantic import Field

from echora_server.auth.access import CHANNEL_NOT_FOUND
from echora_server.auth.identity import require_identity
from echora_server.core.route import Route
from echora_server.core.validation import MAX_ID, Body, path_id, read_json
from echora_server.readstate.service import READ_STATE
from echora_server.readstate.shapes import ChannelReadState, channel_read_state_json


class MarkReadBody(Body):
    message_id: int = Field(
        ge=1,
        le=MAX_ID,
        description="A message of this channel: I have read it and everything before it",
    )


async def mark_read(request: web.Request) -> web.Response:
    identity = await require_identity(request)
    channel_id = path_id(request, "channel_id", CHANNEL_NOT_FOUND)
    body = await read_json(request, MarkReadBody)
    state = await request.app[READ_STATE].mark_read(identity, channel_id, body.message_id)
    return web.json_response(channel_read_state_json(channel_id, state))


ROUTES: tuple[Route, ...] = (
    Route(
        "POST",
        "/api/channels/{channel_id}/read",
        mark_read,
        "Mark a channel (or direct message) read up to a message; only forward",
        "channels",
        body=MarkReadBody,
        responses={
            200: "My read state now (an older message than my position leaves it as it was)",
            404: "No such channel that I am in, or no such message in it",
            422: "Invalid body",
        },
        schemas={200: ChannelReadState},
    ),
)
