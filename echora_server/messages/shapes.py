"""JSON shape of a message, as REST answers and events carry it."""

from __future__ import annotations

from typing import Any

from echora_server.accounts.shapes import user_json
from echora_server.db.records import Message
from echora_server.files.shapes import attachment_json


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
