"""JSON shape of a message, as REST answers and events carry it."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import Field

from echora_server.accounts.shapes import User, user_json
from echora_server.core.shapes import Shape
from echora_server.db import records
from echora_server.files.shapes import Attachment, attachment_json


class LinkOut(Shape):
    """A link a message carries."""

    url: str
    title: str


class Reaction(Shape):
    """One emoji on a message, in the order of first use."""

    emoji: str
    count: int = Field(ge=1, description="How many people reacted with it.")
    mine: bool = Field(
        description="Whether I did; in events always false (they carry no viewer: "
        "reaction.added and reaction.removed name the user)."
    )


class Message(Shape):
    id: int
    channel_id: int
    workspace_id: int
    author: User
    content: str
    client_id: str | None
    created_at: dt.datetime
    edited_at: dt.datetime | None
    attachments: list[Attachment]
    links: list[LinkOut]
    reactions: list[Reaction]


def message_json(message: records.Message) -> dict[str, Any]:
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
        "reactions": [
            {"emoji": r.emoji, "count": r.count, "mine": r.mine} for r in message.reactions
        ],
    }
