"""JSON shapes of bots and inbox entries."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from pydantic import Field

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
    backlog: int = Field(description="Entries not yet acknowledged (and not expired).")
    last_delivered_at: dt.datetime | None = Field(description="The last push answered 2xx.")
    last_delivery_error: str | None = Field(
        description="Why the last failed push failed: http_<status>, timeout, "
        "address_refused, connection_failed, redirect_refused."
    )
    last_delivery_error_at: dt.datetime | None
    callback_disabled_at: dt.datetime | None = Field(
        description="The callback answered 410: nothing is pushed until the delivery is set again."
    )


class InboxEntry(Shape):
    id: int = Field(description="Increasing per bot; stable across deliveries (deduplicate on it).")
    type: str = Field(description="The event type, as on the WebSocket.")
    body: dict[str, Any] = Field(description="The event, as on the WebSocket (without type).")
    created_at: dt.datetime
    expires_at: dt.datetime = Field(description="Deleted then, acknowledged or not.")
    fetched_at: dt.datetime | None = Field(
        description="When one of its files was first downloaded by the bot."
    )
    acked_at: dt.datetime | None = Field(
        description="When it was acknowledged (kept ECHORA_INBOX_ACK_RETENTION, then deleted)."
    )
    attempts: int = Field(description="How many times it was handed out, this one included.")
    lease_expires_at: dt.datetime | None = Field(
        description="Returned again after this unless acknowledged."
    )


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def bot_json(bot: records.Bot, backlog: int = 0) -> dict[str, Any]:
    return {
        "id": bot.user.id,
        "username": bot.user.username,
        "display_name": bot.user.display_name,
        "workspace_id": bot.workspace_id,
        "delivery": bot.delivery,
        "callback_url": bot.callback_url,
        "created_at": bot.created_at.isoformat(),
        "backlog": backlog,
        "last_delivered_at": _iso(bot.last_delivered_at),
        "last_delivery_error": bot.last_delivery_error,
        "last_delivery_error_at": _iso(bot.last_delivery_error_at),
        "callback_disabled_at": _iso(bot.callback_disabled_at),
    }


def entry_json(entry: records.InboxEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "type": entry.type,
        "body": json.loads(entry.body),
        "created_at": entry.created_at.isoformat(),
        "expires_at": entry.expires_at.isoformat(),
        "fetched_at": _iso(entry.fetched_at),
        "acked_at": _iso(entry.acked_at),
        "attempts": entry.attempts,
        "lease_expires_at": _iso(entry.leased_until),
    }
