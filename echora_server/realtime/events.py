"""Events: what the server tells WebSocket clients, published only after a commit.

A write that others should see either runs in ``async with transaction(app, conn) as
events`` and appends its events there (they go out with the commit: on PostgreSQL the
NOTIFY is part of the transaction, so no crash can separate a message from its event),
or ends with ``await publish(app, Event(...))`` *after* its transaction committed. Either
way a rolled-back write never emits anything. The fan-out backend carries the event to
every server process; each process's hub delivers it to the local sockets subscribed to
the channel.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import structlog
from aiohttp import web

from echora_server.keys import FANOUT

log = structlog.get_logger("echora.events")

# Event types (the "type" field of a frame).
MESSAGE_CREATED = "message.created"
MESSAGE_UPDATED = "message.updated"
MESSAGE_DELETED = "message.deleted"
CHANNEL_MEMBER_ADDED = "channel.member_added"
CHANNEL_MEMBER_REMOVED = "channel.member_removed"
WORKSPACE_MEMBER_REMOVED = "workspace.member_removed"
# Internal to the hubs (never sent to clients): a token was revoked or a session ended,
# so sockets opened with it close. ``data`` holds "token_id" or "session" (digest, hex).
CREDENTIAL_REVOKED = "credential.revoked"
NO_WORKSPACE = 0


@dataclass(frozen=True, slots=True)
class Event:
    type: str
    workspace_id: int
    # The channel whose subscribers receive it; None for workspace-level events, which
    # only the hub itself consumes (to drop a removed member's subscriptions).
    channel_id: int | None
    # The JSON body sent to clients, beside "type".
    data: dict[str, Any] = field(default_factory=dict)
    # The user a membership change is about.
    user_id: int | None = None

    def frame(self) -> str:
        """The text frame as sent to clients (serialised once per event per process)."""
        return json.dumps({"type": self.type, **self.data}, separators=(",", ":"))

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "workspace_id": self.workspace_id,
            "channel_id": self.channel_id,
            "data": self.data,
            "user_id": self.user_id,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Event:
        return cls(raw["type"], raw["workspace_id"], raw["channel_id"], raw["data"], raw["user_id"])


async def publish(app: web.Application, *events: Event) -> None:
    """Hand events to the fan-out. Call only after the write's transaction committed.

    A fan-out failure is logged, not raised: the write stands, and failing the request
    would make the client retry something that succeeded; clients catch up from history
    (REST) or ``resume`` (WebSocket)."""
    for event in events:
        try:
            await app[FANOUT].publish(event)
        except Exception:
            log.exception("event_publish_failed", type=event.type, channel_id=event.channel_id)


@asynccontextmanager
async def transaction(app: web.Application, conn: asyncpg.Connection) -> AsyncIterator[list[Event]]:
    """A transaction on ``conn`` whose events, appended to the list it yields, are
    published if and only if it commits.

    Staging them can fail like any statement: then the write rolls back with them."""
    events: list[Event] = []
    async with conn.transaction():
        yield events
        await stage(app, conn, events)
    await committed(app, events)


async def stage(app: web.Application, conn: asyncpg.Connection, events: list[Event]) -> None:
    """Inside a transaction on ``conn``: ``events`` go out if it commits (``committed``
    must follow the commit)."""
    if events:
        await app[FANOUT].stage(conn, events)


async def committed(app: web.Application, events: list[Event]) -> None:
    """After the commit of a transaction that staged ``events``."""
    if not events:
        return
    try:
        await app[FANOUT].committed(events)
    except Exception:  # as in publish(): the write stands; clients catch up
        log.exception("event_publish_failed", types=[event.type for event in events])
