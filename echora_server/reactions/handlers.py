"""Reactions over REST: ``PUT`` adds mine, ``DELETE`` removes it; both idempotent."""

from __future__ import annotations

from aiohttp import web

from echora_server.auth.identity import require_identity
from echora_server.core.route import Route
from echora_server.core.validation import path_id
from echora_server.messages.service import MESSAGE_NOT_FOUND
from echora_server.reactions.emoji import check_emoji, emoji_schema
from echora_server.reactions.service import REACTIONS
from echora_server.reactions.shapes import ReactionState, reaction_state_json


async def add_reaction(request: web.Request) -> web.Response:
    identity = await require_identity(request)
    message_id = path_id(request, "message_id", MESSAGE_NOT_FOUND)
    emoji = check_emoji(request.match_info["emoji"])
    change = await request.app[REACTIONS].add(identity, message_id, emoji)
    body = reaction_state_json(message_id, emoji, change.count, mine=True)
    return web.json_response(body, status=201 if change.changed else 200)


async def remove_reaction(request: web.Request) -> web.Response:
    identity = await require_identity(request)
    message_id = path_id(request, "message_id", MESSAGE_NOT_FOUND)
    emoji = check_emoji(request.match_info["emoji"])
    await request.app[REACTIONS].remove(identity, message_id, emoji)
    return web.Response(status=204)


PATH = "/api/messages/{message_id}/reactions/{emoji}"
PATH_PARAMS = {"emoji": emoji_schema()}

ROUTES: tuple[Route, ...] = (
    Route(
        "PUT",
        PATH,
        add_reaction,
        "React to a message with an emoji (mine, once per emoji; idempotent)",
        "reactions",
        responses={
            201: "Added",
            200: "It was mine already: nothing changed",
            404: "No such message visible to me",
            422: "Not an emoji (the path parameter's rule)",
            429: "Sending too fast (Retry-After)",
        },
        schemas={201: ReactionState, 200: ReactionState},
        path_params=PATH_PARAMS,
    ),
    Route(
        "DELETE",
        PATH,
        remove_reaction,
        "Remove my reaction with an emoji (204 whether or not it was there)",
        "reactions",
        responses={
            204: "Removed, or it was not there",
            404: "No such message visible to me",
            422: "Not an emoji (the path parameter's rule)",
            429: "Sending too fast (Retry-After)",
        },
        path_params=PATH_PARAMS,
    ),
)
