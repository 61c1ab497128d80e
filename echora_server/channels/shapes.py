"""JSON shapes of channels and channel members."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import Field

from echora_server.accounts.shapes import User, user_json
from echora_server.core.shapes import Shape
from echora_server.db import records


class Channel(Shape):
    """A channel as every viewer sees it (events carry this shape)."""

    id: int
    workspace_id: int
    name: str
    topic: str
    private: bool
    created_by: int | None
    created_at: dt.datetime
    kind: records.ChannelKind = Field(
        description="channel, or dm: a direct message (private, its members fixed; its name is "
        "empty)"
    )
    archived: bool = Field(
        description="Read-only while archived: posting, editing, deleting, reacting, uploading "
        "and joining answer 403 channel_archived; its history stays readable"
    )


class ChannelView(Channel):
    """A channel, and whether I am in it."""

    joined: bool


class ReadStateFields(Shape):
    """My read state of a channel: where I am, and what is left after it."""

    last_read_message_id: int | None = Field(
        description="The newest message I have read (POST /api/channels/{id}/read); null before "
        "the first"
    )
    unread_count: int = Field(
        ge=0,
        description="Messages after it that are not mine (before any position: since I joined), "
        "counted up to 1000 (1000: that many or more); 0 in a channel I am not in",
    )
    mention_count: int = Field(ge=0, description="How many of those mention me (@username)")


class ListedChannel(ChannelView, ReadStateFields):
    """A channel in the list, with my read state of it."""


class ChannelMember(User):
    joined_at: dt.datetime


def channel_json(channel: records.Channel) -> dict[str, Any]:
    """A channel as every viewer sees it (events carry this shape)."""
    return {
        "id": channel.id,
        "workspace_id": channel.workspace_id,
        "name": "" if channel.direct else channel.name,
        "topic": channel.topic,
        "private": channel.private,
        "created_by": channel.created_by,
        "created_at": channel.created_at.isoformat(),
        "kind": channel.kind,
        "archived": channel.archived,
    }


def channel_view_json(view: records.ChannelView) -> dict[str, Any]:
    return {**channel_json(view.channel), "joined": view.joined}


def read_state_json(state: records.ReadState) -> dict[str, Any]:
    return {
        "last_read_message_id": state.last_read_message_id,
        "unread_count": state.unread_count,
        "mention_count": state.mention_count,
    }


def listed_channel_json(listed: records.ListedChannel) -> dict[str, Any]:
    return {**channel_view_json(listed.view), **read_state_json(listed.read)}


def channel_member_json(member: records.ChannelMember) -> dict[str, Any]:
    return {**user_json(member.user), "joined_at": member.joined_at.isoformat()}


class DirectMessage(Shape):
    """A direct message and its current members."""

    id: int = Field(description="Its channel id: messages, files and members as any channel's")
    workspace_id: int
    created_by: int | None
    created_at: dt.datetime
    members: list[User]


def direct_message_json(dm: records.DirectMessage) -> dict[str, Any]:
    channel = dm.channel
    return {
        "id": channel.id,
        "workspace_id": channel.workspace_id,
        "created_by": channel.created_by,
        "created_at": channel.created_at.isoformat(),
        "members": [user_json(user) for user in dm.members],
    }


class ListedDirectMessage(DirectMessage, ReadStateFields):
    """A direct message in my list, with my read state of it."""


def listed_direct_json(listed: records.ListedDirect) -> dict[str, Any]:
    return {**direct_message_json(listed.dm), **read_state_json(listed.read)}
