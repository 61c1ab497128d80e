"""JSON shapes of bots."""

from __future__ import annotations

import datetime as dt
from typing import Any

from echora_server.core.shapes import Shape
from echora_server.db import records
from echora_server.db.records import Delivery


class Bot(Shape):
    id: int
    username: str
    display_name: str
    workspace_id: int
    delivery: Delivery
    callback_url: str | None
    created_at: dt.datetime


def bot_json(bot: records.Bot) -> dict[str, Any]:
    return {
        "id": bot.user.id,
        "username": bot.user.username,
        "display_name": bot.user.display_name,
        "workspace_id": bot.workspace_id,
        "delivery": bot.delivery,
        "callback_url": bot.callback_url,
        "created_at": bot.created_at.isoformat(),
    }
