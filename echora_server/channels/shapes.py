"""JSON shapes of channels and channel members."""

from __future__ import annotations

from typing import Any

from echora_server.accounts.shapes import user_json
from echora_server.db.records import Channel, ChannelMember, ChannelView


def channel_json(channel: Channel) -> dict[str, Any]:
    """A channel as every viewer sees it (events carry this shape)."""
    return {
        "id": channel.id,
        "workspace_id": channel.workspace_id,
        "name": channel.name,
        "topic": channel.topic,
        "private": channel.private,
        "created_by": channel.created_by,
        "created_at": channel.created_at.isoformat(),
    }


def channel_view_json(view: ChannelView) -> dict[str, Any]:
    return {**channel_json(view.channel), "joined": view.joined}


def channel_member_json(member: ChannelMember) -> dict[str, Any]:
    return {**user_json(member.user), "joined_at": member.joined_at.isoformat()}
