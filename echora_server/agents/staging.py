"""Staging: every event a push- or poll-mode bot would get on a WebSocket is written to its
inbox in the transaction of the write that caused it, so a rolled-back write leaves no entry
and a committed one cannot lose its entries. One internal event then tells every process
which bots have news (their long polls wake)."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import structlog
from prometheus_client import Counter

from echora_server.db import inbox
from echora_server.realtime.events import CLIENT_EVENTS, INBOX_STAGED, NO_WORKSPACE, Event

log = structlog.get_logger("echora.inbox")


def _files(event: Event) -> list[dict[str, Any]]:
    """The files an event's message carries: id, size and (sanitised) name."""
    message: dict[str, Any] = event.data.get("message") or {}
    return [
        {"id": str(item["id"]), "size": item.get("size"), "name": item.get("filename")}
        for item in message.get("attachments", ())
    ]


class InboxSink:
    """An ``EventBus`` sink: called with a write's events before its commit."""

    def __init__(self, ttl_seconds: float, staged: Counter | None = None) -> None:
        self.ttl_seconds = ttl_seconds
        self._staged = staged

    async def stage(self, conn: asyncpg.Connection, events: list[Event]) -> None:
        woken: set[int] = set()
        for event in tuple(events):
            if event.type not in CLIENT_EVENTS:
                continue
            files = _files(event)
            staged = await inbox.stage_entries(
                conn,
                workspace_id=event.workspace_id,
                channel_id=event.channel_id,
                subject_id=event.user_id,
                type=event.type,
                body=json.dumps(event.data, separators=(",", ":")),
                attachment_ids=[f["id"] for f in files],
                ttl_seconds=self.ttl_seconds,
            )
            for bot_id, entry_id in staged:
                # Before the commit: a rollback un-stages it (the write's error is logged).
                log.info(
                    "inbox_staged",
                    workspace_id=event.workspace_id,
                    bot_id=bot_id,
                    entry_id=entry_id,
                    type=event.type,
                    files=files,
                )
            woken.update(bot_id for bot_id, _ in staged)
            if self._staged is not None and staged:
                self._staged.inc(len(staged))
        if woken:
            events.append(Event(INBOX_STAGED, NO_WORKSPACE, None, {"bot_ids": sorted(woken)}))
