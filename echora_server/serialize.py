"""JSON shapes of domain records, shared by every handler that returns them."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from echora_server.db.records import (
    ApiToken,
    Attachment,
    Channel,
    ChannelMember,
    ChannelView,
    Member,
    Membership,
    Message,
    User,
)


def user_json(user: User) -> dict[str, Any]:
    return {"id": user.id, "username": user.username, "display_name": user.display_name}


def membership_json(membership: Membership) -> dict[str, Any]:
    ws = membership.workspace
    return {"id": ws.id, "slug": ws.slug, "name": ws.name, "role": membership.role}


def member_json(member: Member) -> dict[str, Any]:
    return {
        **user_json(member.user),
        "role": member.role,
        "joined_at": member.joined_at.isoformat(),
    }


def token_json(token: ApiToken) -> dict[str, Any]:
    def iso(value: Any) -> str | None:
        return value.isoformat() if value is not None else None

    return {
        "id": token.id,
        "name": token.name,
        "hint": token.hint,
        "workspace_id": token.workspace_id,
        "created_at": iso(token.created_at),
        "expires_at": iso(token.expires_at),
        "last_used_at": iso(token.last_used_at),
        "revoked": token.revoked_at is not None,
    }


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
    """A channel as the caller sees it: whether they are in it."""
    return {**channel_json(view.channel), "joined": view.joined}


def channel_member_json(member: ChannelMember) -> dict[str, Any]:
    return {**user_json(member.user), "joined_at": member.joined_at.isoformat()}


def message_json(message: Message) -> dict[str, Any]:
    return {
        "id": message.id,
        "channel_id": message.channel_id,
        "workspace_id": message.workspace_id,
        "author": user_json(message.author),
        "content": message.content,
        "client_id": message.client_id,
        "created_at": message.created_at.isoformat(),
        "edited_at": message.edited_at.isoformat() if message.edited_at else None,
        "attachments": [attachment_json(a) for a in message.attachments],
        "links": [{"url": link.url, "title": link.title} for link in message.links],
    }


def attachment_url(attachment: Attachment) -> str:
    """The download URL; the name in it is cosmetic (downloads use the stored name)."""
    return f"/api/files/{attachment.id}/{quote(attachment.filename, safe='')}"


def attachment_json(attachment: Attachment) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": attachment.id,
        "filename": attachment.filename,
        "size": attachment.size,
        # What the bytes are, when known; else the safe type a download gets.
        "mime_type": attachment.detected_type or "application/octet-stream",
        "sha256": attachment.sha256.hex(),
        "created_at": attachment.created_at.isoformat(),
        "url": attachment_url(attachment),
    }
    if attachment.width is not None and attachment.height is not None:
        body["width"], body["height"] = attachment.width, attachment.height
    if attachment.thumbnail_key is not None:
        body["thumbnail_url"] = f"/api/thumbnails/{attachment.id}"
    return body
