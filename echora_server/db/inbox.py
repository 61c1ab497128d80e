"""Bot inbox entries: staged in the transaction of the write that caused them, leased by polls
(``FOR UPDATE SKIP LOCKED``: two polls never take one entry), acknowledged, swept at expiry."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
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
# Several bots' polls in one statement (each bot once): each bot's oldest visible entries,
# up to its own limit, leased until $3 + $4 seconds.
LEASE_ENTRIES = """
WITH asked AS (SELECT * FROM unnest($1::bigint[], $2::int[]) AS a(bot_id, lim)),
picked AS (
    SELECT p.bot_id, p.id FROM asked a CROSS JOIN LATERAL (
        SELECT e.bot_id, e.id FROM inbox_entries e
        WHERE e.bot_id = a.bot_id AND e.acked_at IS NULL AND e.expires_at > $3
          AND (e.leased_until IS NULL OR e.leased_until <= $3)
        ORDER BY e.id
        LIMIT a.lim
        FOR UPDATE SKIP LOCKED
    ) p
)
UPDATE inbox_entries e
SET leased_until = $3 + make_interval(secs => $4), attempts = e.attempts + 1
FROM picked WHERE e.bot_id = picked.bot_id AND e.id = picked.id
RETURNING e.bot_id, e.id, e.type, e.body::text AS body, e.created_at, e.expires_at,
          e.leased_until, e.fetched_at, e.acked_at, e.attempts
"""


async def lease_entries_of_bots(
    conn: asyncpg.Connection, limits: Mapping[int, int], now: dt.datetime, lease_seconds: float
) -> dict[int, list[InboxEntry]]:
    """``lease_entries`` for several bots (bot id: limit) in one statement; by bot, oldest
    first."""
    rows = await conn.fetch(LEASE_ENTRIES, list(limits), list(limits.values()), now, lease_seconds)
    found: dict[int, list[InboxEntry]] = {}
    for row in rows:
        found.setdefault(row["bot_id"], []).append(to_entry(row))
    for entries in found.values():
        entries.sort(key=lambda entry: entry.id)
    return found


NEXT_LEASE_ENDS = """
SELECT bot_id, min(leased_until) AS lease_end FROM inbox_entries
WHERE bot_id = ANY($1::bigint[]) AND acked_at IS NULL AND expires_at > $2 AND leased_until > $2
GROUP BY bot_id
"""


async def next_lease_ends(
    conn: asyncpg.Connection, bot_ids: Sequence[int], now: dt.datetime
) -> dict[int, dt.datetime]:
    """When the first entry leased now becomes visible again, by bot (absent: none leased)."""
    rows = await conn.fetch(NEXT_LEASE_ENDS, list(bot_ids), now)
    return {row["bot_id"]: row["lease_end"] for row in rows}


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
