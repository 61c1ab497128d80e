"""Bot inbox entries: staged in the transaction of the write that caused them, swept at expiry."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import asyncpg

from echora_server.db.records import INBOX_DELIVERIES

# The bots owed an event: push- and poll-mode bots of the workspace that are in the event's
# channel now (inside the write's transaction), or that the event is about (a bot just
# removed from a channel is told so, as its socket would be). Their rows are locked in id
# order (no deadlock between two writes) until the commit, so per-bot ids follow commit order.
STAGE_ENTRIES = """
WITH owed AS (
    SELECT b.user_id FROM bots b
    WHERE b.workspace_id = $1 AND b.delivery = ANY($8::text[])
      AND (b.user_id = $3 OR EXISTS (
          SELECT 1 FROM channel_members m WHERE m.channel_id = $2 AND m.user_id = b.user_id))
    ORDER BY b.user_id
    FOR UPDATE OF b
), numbered AS (
    UPDATE bots b SET last_entry_id = b.last_entry_id + 1
    FROM owed WHERE b.user_id = owed.user_id
    RETURNING b.user_id, b.last_entry_id
)
INSERT INTO inbox_entries
    (bot_id, id, workspace_id, channel_id, type, body, attachment_ids, expires_at)
SELECT user_id, last_entry_id, $1, $2, $4, $5::jsonb, $6::text[],
       now() + make_interval(secs => $7)
FROM numbered
RETURNING bot_id
"""


async def stage_entries(
    conn: asyncpg.Connection,
    *,
    workspace_id: int,
    channel_id: int | None,
    subject_id: int | None,
    type: str,
    body: str,
    attachment_ids: Sequence[str],
    ttl_seconds: float,
) -> list[int]:
    """The ids of the bots an entry was staged for."""
    rows = await conn.fetch(
        STAGE_ENTRIES,
        workspace_id,
        channel_id,
        subject_id,
        type,
        body,
        list(attachment_ids),
        ttl_seconds,
        list(INBOX_DELIVERIES),
    )
    return [row["bot_id"] for row in rows]


DELETE_EXPIRED = """
DELETE FROM inbox_entries e USING (
    SELECT bot_id, id FROM inbox_entries WHERE expires_at <= $1
    ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED
) old
WHERE e.bot_id = old.bot_id AND e.id = old.id
"""


async def delete_expired(conn: asyncpg.Connection, now: dt.datetime, batch: int) -> int:
    status = await conn.execute(DELETE_EXPIRED, now, batch)
    return int(status.split()[-1])
