"""Staging: every event a push- or poll-mode bot would get on a WebSocket is written to its
inbox in the transaction of the write that caused it, so a rolled-back write leaves no entry
and a committed one cannot lose its entries. One internal event then tells every process
which bots have news (their long polls wake)."""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from echora_server.db import inbox
from echora_server.realtime.events import CLIENT_EVENTS, INBOX_STAGED, NO_WORKSPACE, Event


def attachment_ids(event: Event) -> list[str]:
    message: dict[str, Any] = event.data.get("message") or {}
    return [str(item["id"]) for item in message.get("attachments", ())]


class InboxSink:
    """An ``EventBus`` sink: called with a write's events before its commit."""

    def __init__(self, ttl_seconds: float) -> None:
        self.ttl_seconds = ttl_seconds

    async def stage(self, conn: asyncpg.Connection, events: list[Event]) -> None:
        woken: set[int] = set()
        for event in tuple(events):
            if event.type not in CLIENT_EVENTS:
                continue
            staged = await inbox.stage_entries(
                conn,
                workspace_id=event.workspace_id,
                channel_id=event.channel_id,
                subject_id=event.user_id,
                type=event.type,
                body=json.dumps(event.data, separators=(",", ":")),
                attachment_ids=attachment_ids(event),
                ttl_seconds=self.ttl_seconds,
            )
            woken.update(staged)
        if woken:
            events.append(Event(INBOX_STAGED, NO_WORKSPACE, None, {"bot_ids": sorted(woken)}))
