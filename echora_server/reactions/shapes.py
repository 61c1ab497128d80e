"""JSON shape of a reaction change's answer."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from echora_server.core.shapes import Shape


class ReactionState(Shape):
    """My reaction with one emoji on one message, after the request."""

    message_id: int
    emoji: str
    count: int = Field(ge=0, description="How many people reacted with this emoji now.")
    mine: bool


def reaction_state_json(message_id: int, emoji: str, count: int, mine: bool) -> dict[str, Any]:
    return {"message_id": message_id, "emoji": emoji, "count": count, "mine": mine}
