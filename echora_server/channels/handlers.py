"""Channels and their members over REST (the rules: ``channels.service``)."""

from __future__ import annotations

from typing import Annotated

from aiohttp import web
from pydantic import ConfigDict, Field, model_validator

from echora_server.accounts.service import USERNAME_PATTERN
from echora_server.auth.access import (
    CHANNEL_NOT_FOUND,
    MAX_DIRECT_MEMBERS,
    WORKSPACE_NOT_FOUND,
)
from echora_server.auth.identity import require_identity
from echora_server.channels.direct import DIRECT_MESSAGES
from echora_server.channels.service import CHANNELS, MAX_CHANNEL_NAME, MAX_TOPIC, MEMBER_NOT_FOUND
from echora_server.channels.shapes import (
    ChannelMember,
    ChannelView,
    DirectMessage,
    ListedChannel,
    ListedDirectMessage,
    channel_member_json,
    channel_view_json,
    direct_message_json,
    listed_channel_json,
    listed_direct_json,
)
from echora_server.core.route import Route
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


class CreateChannelBody(Body):
    workspace_id: int = Field(ge=1, le=MAX_ID)
    name: str = Field(
        min_length=1,
        max_length=MAX_CHANNEL_NAME,
        json_schema_extra={"pattern": text_pattern(blank=False)},
    )
    private: bool = False
    topic: str = Field("", max_length=MAX_TOPIC, json_schema_extra={"pattern": text_pattern()})


class ChannelsQuery(Query):
    workspace_id: int = Field(ge=1, le=MAX_ID, description="The workspace to list.")


class AddChannelMemberBody(Body):
    # Exactly one of the two, not null.
    model_config = ConfigDict(
        json_schema_extra={
            "oneOf": [
                {"required": [name], "properties": {name: {"not": {"type": "null"}}}}
                for name in ("user_id", "username")
            ]
        }
    )

    user_id: int | None = Field(None, ge=1, le=MAX_ID)
    username: str | None = Field(
        None, min_length=1, max_length=64, json_schema_extra={"pattern": USERNAME_PATTERN}
    )

    @model_validator(mode="after")
    def _one_of(self) -> AddChannelMemberBody:
        if (self.user_id is None) == (self.username is None):
            raise ValueError("give either user_id or username")
        return self


class OpenDirectBody(Body):
    user_ids: list[Annotated[int, Field(ge=1, le=MAX_ID)]] = Field(
        min_length=1,
        max_length=MAX_DIRECT_MEMBERS,
        description="The other members (users or bots of the workspace); I am always one. "
        "2 to 8 people in all, in any order.",
    )


class DirectMessages(Shape):
    dms: list[ListedDirectMessage]


class Channels(Shape):
    channels: list[ListedChannel]


class ChannelMembers(Shape):
    members: list[ChannelMember]


async def create_channel(request: web.Request) -> web.Response:
    identity = await require_identity(request)
    body = await read_json(request, CreateChannelBody)
    view = await request.app[CHANNELS].create_channel(
        identity, body.workspace_id, body.name, private=body.private, topic=body.topic
    )
    return web.json_response(channel_view_json(view), status=201)


async def list_channels(request: web.Request) -> web.Response:
    identity = await require_identity(request)
    query = read_query(request, ChannelsQuery)
    views = await request.app[CHANNELS].list_channels(identity, query.workspace_id)
    return web.json_response({"channels": [listed_channel_json(v) for v in views]})


async def get_channel(request: web.Request) -> web.Response:
    identity = await require_identity(request)
    channel_id = path_id(request, "channel_id", CHANNEL_NOT_FOUND)
    view = await request.app[CHANNELS].get_channel(identity, channel_id)
    return web.json_response(channel_view_json(view))


async def join_channel(request: web.Request) -> web.Response:
    identity = await require_identity(request)
    channel_id = path_id(request, "channel_id", CHANNEL_NOT_FOUND)
    view = await request.app[CHANNELS].join_channel(identity, channel_id)
    return web.json_response(channel_view_json(view))


async def leave_channel(request: web.Request) -> web.Response:
    identity = await require_identity(request)
    channel_id = path_id(request, "channel_id", CHANNEL_NOT_FOUND)
    await request.app[CHANNELS].leave_channel(identity, channel_id)
    return web.Response(status=204)


async def list_channel_members(request: web.Request) -> web.Response:
    identity = await require_identity(request)
    channel_id = path_id(request, "channel_id", CHANNEL_NOT_FOUND)
    members = await request.app[CHANNELS].list_channel_members(identity, channel_id)
    return web.json_response({"members": [channel_member_json(m) for m in members]})


async def add_channel_member(request: web.Request) -> web.Response:
    identity = await require_identity(request)
    channel_id = path_id(request, "channel_id", CHANNEL_NOT_FOUND)
    body = await read_json(request, AddChannelMemberBody)
    member, added = await request.app[CHANNELS].add_channel_member(
        identity, channel_id, user_id=body.user_id, username=body.username
    )
    return web.json_response(channel_member_json(member), status=201 if added else 200)


async def remove_channel_member(request: web.Request) -> web.Response:
    identity = await require_identity(request)
    channel_id = path_id(request, "channel_id", CHANNEL_NOT_FOUND)
    user_id = path_id(request, "user_id", MEMBER_NOT_FOUND)
    await request.app[CHANNELS].remove_channel_member(identity, channel_id, user_id)
    return web.Response(status=204)


async def open_direct_message(request: web.Request) -> web.Response:
    identity = await require_identity(request)
    workspace_id = path_id(request, "workspace_id", WORKSPACE_NOT_FOUND)
    body = await read_json(request, OpenDirectBody)
    dm, created = await request.app[DIRECT_MESSAGES].open(identity, workspace_id, body.user_ids)
    return web.json_response(direct_message_json(dm), status=201 if created else 200)


async def list_direct_messages(request: web.Request) -> web.Response:
    identity = await require_identity(request)
    workspace_id = path_id(request, "workspace_id", WORKSPACE_NOT_FOUND)
    dms = await request.app[DIRECT_MESSAGES].list_mine(identity, workspace_id)
    return web.json_response({"dms": [listed_direct_json(dm) for dm in dms]})


_FIXED = "A direct message: its members are fixed (direct_message)"
ROUTES: tuple[Route, ...] = (
    Route(
        "POST",
        "/api/workspaces/{workspace_id}/dms",
        open_direct_message,
        "Open a direct message with workspace members (the same set again: the same one)",
        "dms",
        body=OpenDirectBody,
        responses={
            201: "Created",
            200: "It existed already",
            404: "No such workspace of mine, or a user not in it (user_not_found)",
            422: "Invalid body, or not 2 to 8 people with me (direct_message_size)",
        },
        schemas={201: DirectMessage, 200: DirectMessage},
    ),
    Route(
        "GET",
        "/api/workspaces/{workspace_id}/dms",
        list_direct_messages,
        "List my direct messages in a workspace, with their members and my read state of each",
        "dms",
        responses={200: "OK", 404: "No such workspace of mine"},
        schemas={200: DirectMessages},
    ),
    Route(
        "POST",
        "/api/channels",
        create_channel,
        "Create a channel (the creator joins it)",
        "channels",
        body=CreateChannelBody,
        responses={
            201: "Created",
            404: "No such workspace of mine",
            409: "A channel of that name exists (names ignore case)",
        },
        schemas={201: ChannelView},
    ),
    Route(
        "GET",
        "/api/channels",
        list_channels,
        "List a workspace's public channels and my private ones (no direct messages), with my "
        "read state of each",
        "channels",
        query=ChannelsQuery,
        responses={200: "OK", 404: "No such workspace of mine", 422: "Invalid query"},
        schemas={200: Channels},
    ),
    Route(
        "GET",
        "/api/channels/{channel_id}",
        get_channel,
        "A channel, and whether I am in it",
        "channels",
        responses={200: "OK", 404: "No such channel visible to me"},
        schemas={200: ChannelView},
    ),
    Route(
        "POST",
        "/api/channels/{channel_id}/join",
        join_channel,
        "Join a public channel",
        "channels",
        responses={
            200: "Joined (or already in it)",
            403: _FIXED,
            404: "No such channel visible to me",
        },
        schemas={200: ChannelView},
    ),
    Route(
        "POST",
        "/api/channels/{channel_id}/leave",
        leave_channel,
        "Leave a channel",
        "channels",
        responses={
            204: "Left (or was not in it)",
            403: _FIXED,
            404: "No such channel visible to me",
        },
    ),
    Route(
        "GET",
        "/api/channels/{channel_id}/members",
        list_channel_members,
        "List a channel's members",
        "channels",
        responses={200: "OK", 404: "No such channel visible to me"},
        schemas={200: ChannelMembers},
    ),
    Route(
        "POST",
        "/api/channels/{channel_id}/members",
        add_channel_member,
        "Add a workspace member to a channel I am in",
        "channels",
        body=AddChannelMemberBody,
        responses={
            201: "Added",
            200: "Already a member",
            403: "I am not in the channel, or it is a direct message (direct_message)",
            404: "No such channel visible to me, or no such member of the workspace",
        },
        schemas={201: ChannelMember, 200: ChannelMember},
    ),
    Route(
        "DELETE",
        "/api/channels/{channel_id}/members/{user_id}",
        remove_channel_member,
        "Remove a member from a channel (owners and admins; anyone may remove themselves)",
        "channels",
        responses={
            204: "Removed",
            403: "Not allowed (direct_message: its members are fixed)",
            404: "No such channel visible to me, or no such member",
        },
    ),
)
