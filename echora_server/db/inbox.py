"""Bot inbox entries: staged in the transaction of the write that caused them, leased by polls
(``FOR UPDATE SKIP LOCKED``: two polls never take one entry), acknowledged, swept at expiry."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from echora_server.db.records import INBOX_DELIVERIES, InboxEntry

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
RETURNING bot_id, id
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
) -> list[tuple[int, int]]:
    """(bot id, entry id) of each entry staged."""
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
    return [(row["bot_id"], row["id"]) for row in rows]


def to_entry(row: asyncpg.Record) -> InboxEntry:
    return InboxEntry(
        row["bot_id"],
        row["id"],
        row["type"],
        row["body"],
        row["created_at"],
        row["expires_at"],
        row["leased_until"],
        row["fetched_at"],
        row["acked_at"],
        row["attempts"],
    )


# Visible: live, not acknowledged, not under another poll's lease. Rows another poll is
# leasing right now are skipped, not waited for.
LEASE_ENTRIES = """
WITH picked AS (
    SELECT bot_id, id FROM inbox_entries
    WHERE bot_id = $1 AND acked_at IS NULL AND expires_at > $2
      AND (leased_until IS NULL OR leased_until <= $2)
    ORDER BY id
    LIMIT $3
    FOR UPDATE SKIP LOCKED
)
UPDATE inbox_entries e
SET leased_until = $2 + make_interval(secs => $4), attempts = e.attempts + 1
FROM picked WHERE e.bot_id = picked.bot_id AND e.id = picked.id
RETURNING e.bot_id, e.id, e.type, e.body::text AS body, e.created_at, e.expires_at,
          e.leased_until, e.fetched_at, e.acked_at, e.attempts
"""


async def lease_entries(
    conn: asyncpg.Connection, bot_id: int, now: dt.datetime, limit: int, lease_seconds: float
) -> list[InboxEntry]:
    """The oldest visible entries, leased until ``now`` + ``lease_seconds``; oldest first."""
    rows = await conn.fetch(LEASE_ENTRIES, bot_id, now, limit, lease_seconds)
    return sorted((to_entry(row) for row in rows), key=lambda entry: entry.id)


NEXT_LEASE_END = """
SELECT min(leased_until) FROM inbox_entries
WHERE bot_id = $1 AND acked_at IS NULL AND expires_at > $2 AND leased_until > $2
"""


async def next_lease_end(
    conn: asyncpg.Connection, bot_id: int, now: dt.datetime
) -> dt.datetime | None:
    """When the first entry leased now becomes visible again (None: none is leased)."""
    value: dt.datetime | None = await conn.fetchval(NEXT_LEASE_END, bot_id, now)
    return value


# One statement, so all or nothing without a transaction around it: the live ids are
# locked, and the update runs only when every asked id is one of them.
ACK_ENTRIES = """
WITH asked AS (SELECT DISTINCT unnest($2::bigint[]) AS id),
live AS (
    SELECT e.id, e.acked_at FROM inbox_entries e JOIN asked USING (id)
    WHERE e.bot_id = $1 AND e.expires_at > $3
    FOR UPDATE OF e
),
missing AS (SELECT id FROM asked EXCEPT SELECT id FROM live),
done AS (
    UPDATE inbox_entries e SET acked_at = $3, leased_until = NULL
    FROM live
    WHERE e.bot_id = $1 AND e.id = live.id AND live.acked_at IS NULL
      AND NOT EXISTS (SELECT 1 FROM missing)
)
SELECT id FROM missing
"""


async def ack_entries(
    conn: asyncpg.Connection, bot_id: int, ids: Sequence[int], now: dt.datetime
) -> set[int]:
    """Acknowledge every id if each is a live entry of this bot (acknowledged already is
    fine); returns the ids that are not (then nothing was changed)."""
    return {row["id"] for row in await conn.fetch(ACK_ENTRIES, bot_id, list(ids), now)}


# Expired (whatever their state), or acknowledged longer ago than the retention.
DELETE_DONE = """
WITH doomed AS (
    SELECT bot_id, id FROM inbox_entries
    WHERE expires_at <= $1 OR acked_at <= $2
    ORDER BY bot_id, id LIMIT $3
    FOR UPDATE SKIP LOCKED
)
DELETE FROM inbox_entries e USING doomed
WHERE e.bot_id = doomed.bot_id AND e.id = doomed.id
RETURNING e.bot_id, e.id, e.workspace_id, e.type, e.attachment_ids,
          e.acked_at IS NOT NULL AS acknowledged, e.fetched_at IS NOT NULL AS fetched
"""


@dataclass(frozen=True, slots=True)
class Gone:
    bot_id: int
    entry_id: int
    workspace_id: int
    type: str
    attachment_ids: list[str]
    acknowledged: bool
    fetched: bool


async def delete_done(
    conn: asyncpg.Connection, now: dt.datetime, acked_before: dt.datetime, batch: int
) -> list[Gone]:
    rows = await conn.fetch(DELETE_DONE, now, acked_before, batch)
    return [
        Gone(
            r["bot_id"],
            r["id"],
            r["workspace_id"],
            r["type"],
            list(r["attachment_ids"]),
            r["acknowledged"],
            r["fetched"],
        )
        for r in rows
    ]


COUNT_PENDING = "SELECT count(*) FROM inbox_entries WHERE acked_at IS NULL AND expires_at > $1"


async def count_pending(conn: asyncpg.Connection, now: dt.datetime) -> int:
    """Live entries not acknowledged yet, every bot's: the backlog gauge."""
    return int(await conn.fetchval(COUNT_PENDING, now))


SELECT_ENTRY = "SELECT * FROM inbox_entries WHERE bot_id = $1 AND id = $2 AND expires_at > $3"


async def select_entry(
    conn: asyncpg.Connection, bot_id: int, entry_id: int, now: dt.datetime
) -> InboxEntry | None:
    """A live entry of the bot, acknowledged or not; its lease unchanged."""
    row = await conn.fetchrow(SELECT_ENTRY, bot_id, entry_id, now)
    return to_entry(row) if row else None
