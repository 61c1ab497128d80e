"""A channel's rename, topic, archive and delete over REST (the rules: ``channels.lifecycle``)."""

from __future__ import annotations

from aiohttp import web
from pydantic import ConfigDict, Field, model_validator

from echora_server.auth.access import CHANNEL_NOT_FOUND
from echora_server.auth.identity import require_identity
from echora_server.channels.lifecycle import CHANNEL_LIFECYCLE
from echora_server.channels.service import MAX_CHANNEL_NAME, MAX_TOPIC
from echora_server.channels.shapes import ChannelView, channel_view_json
from echora_server.core.route import Route
from echora_server.core.validation import Body, path_id, read_json, text_pattern


class UpdateChannelBody(Body):
    # At least one of the two, not null (a null one is left as it is).
    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                {"required": [name], "properties": {name: {"not": {"type": "null"}}}}
                for name in ("name", "topic")
            ]
        }
    )

    name: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_CHANNEL_NAME,
        json_schema_extra={"pattern": text_pattern(blank=False)},
    )
    topic: str | None = Field(
        None,
        max_length=MAX_TOPIC,
        json_schema_extra={"pattern": text_pattern()},
    )

    @model_validator(mode="after")
    def _something(self) -> UpdateChannelBody:
        if self.name is None and self.topic is None:
            raise ValueError("give name, topic or both")
        return self


async def update_channel(request: web.Request) -> web.Response:
    identity = await require_identity(request)
    channel_id = path_id(request, "channel_id", CHANNEL_NOT_FOUND)
    body = await read_json(request, UpdateChannelBody)
    view = await request.app[CHANNEL_LIFECYCLE].update(
        identity, channel_id, name=body.name, topic=body.topic
    )
    return web.json_response(channel_view_json(view))


async def archive_channel(request: web.Request) -> web.Response:
    identity = await require_identity(request)
    channel_id = path_id(request, "channel_id", CHANNEL_NOT_FOUND)
    view = await request.app[CHANNEL_LIFECYCLE].set_archived(identity, channel_id, True)
    return web.json_response(channel_view_json(view))


async def unarchive_channel(request: web.Request) -> web.Response:
    identity = await require_identity(request)
    channel_id = path_id(request, "channel_id", CHANNEL_NOT_FOUND)
    view = await request.app[CHANNEL_LIFECYCLE].set_archived(identity, channel_id, False)
    return web.json_response(channel_view_json(view))


async def delete_channel(request: web.Request) -> web.Response:
    identity = await require_identity(request)
    channel_id = path_id(request, "channel_id", CHANNEL_NOT_FOUND)
    await request.app[CHANNEL_LIFECYCLE].delete(identity, channel_id)
    return web.Response(status=204)


_HIDDEN = "No such channel visible to me"
_DIRECT = "direct_message: not for a direct message"
ROUTES: tuple[Route, ...] = (
    Route(
        "PATCH",
        "/api/channels/{channel_id}",
        update_channel,
        "Rename a channel and/or set its topic (members of a public channel; workspace owners "
        "and admins)",
        "channels",
        body=UpdateChannelBody,
        responses={
            200: "Changed (or already so)",
            403: "Not allowed, the channel is archived (channel_archived), or " + _DIRECT,
            404: _HIDDEN,
            409: "A channel of that name exists (names ignore case)",
        },
        schemas={200: ChannelView},
    ),
    Route(
        "POST",
        "/api/channels/{channel_id}/archive",
        archive_channel,
        "Archive a channel: read-only, still listed and readable (workspace owners and admins, "
        "or its creator)",
        "channels",
        responses={200: "Archived (or was)", 403: "Not allowed, or " + _DIRECT, 404: _HIDDEN},
        schemas={200: ChannelView},
    ),
    Route(
        "POST",
        "/api/channels/{channel_id}/unarchive",
        unarchive_channel,
        "Unarchive a channel (workspace owners and admins, or its creator)",
        "channels",
        responses={
            200: "Unarchived (or was not archived)",
            403: "Not allowed, or " + _DIRECT,
            404: _HIDDEN,
        },
        schemas={200: ChannelView},
    ),
    Route(
        "DELETE",
        "/api/channels/{channel_id}",
        delete_channel,
        "Delete a channel with its messages and files (workspace owners and admins)",
        "channels",
        responses={204: "Deleted", 403: "Not allowed, or " + _DIRECT, 404: _HIDDEN},
    ),
)
