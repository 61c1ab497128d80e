"""Queries of the cleanup sweeps (``files.cleanup``): short, in small ``SKIP LOCKED`` batches,
timed by the sweep's ``now`` (tests fix it), never the database clock."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from echora_server.db import audit

# Unlinked only, checked twice: SKIP LOCKED passes rows a linking transaction holds, and the
# outer re-check drops rows linked since the snapshot. Whichever locks the row first wins.
DELETE_EXPIRED_UNLINKED = """
WITH doomed AS (
    SELECT id FROM attachments
    WHERE message_id IS NULL AND created_at < $1
    ORDER BY created_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
DELETE FROM attachments a USING doomed
WHERE a.id = doomed.id AND a.message_id IS NULL
RETURNING a.storage_key, a.thumbnail_key
"""

# The trigger queues at the database clock, later than the sweep's ``now``: without this the
# pass that deleted the rows would not find their objects due, leaving them to the next.
MAKE_DUE = """
UPDATE storage_deletions SET not_before = $2
WHERE key = ANY($1::text[]) AND attempts = 0 AND not_before > $2
"""


async def delete_expired_unlinked(
    conn: asyncpg.Connection, created_before: dt.datetime, now: dt.datetime, limit: int
) -> int:
    """Delete up to ``limit`` expired unlinked attachments, objects due at ``now``; how many."""
    async with conn.transaction():
        await audit.set_context(conn, None, None, None, "file.swept")  # the trigger's record
        rows = await conn.fetch(DELETE_EXPIRED_UNLINKED, created_before, limit)
        keys = [key for row in rows for key in row.values() if key is not None]
        if keys:
            await conn.execute(MAKE_DUE, keys, now)
    return len(rows)


@dataclass(frozen=True, slots=True)
class ExpiryEstimate:
    attachments: int
    new_keys: int  # objects their deletion would add to the queue


COUNT_EXPIRED_UNLINKED = """
SELECT count(DISTINCT a.id) AS attachments,
       count(k.key) FILTER (
           WHERE NOT EXISTS (SELECT 1 FROM storage_deletions d WHERE d.key = k.key)
       ) AS new_keys
FROM attachments a
CROSS JOIN LATERAL (VALUES (a.storage_key), (a.thumbnail_key)) AS k(key)
WHERE a.message_id IS NULL AND a.created_at < $1
"""


async def count_expired_unlinked(
    conn: asyncpg.Connection, created_before: dt.datetime
) -> ExpiryEstimate:
    """What ``delete_expired_unlinked`` would remove (for a dry run)."""
    row = await conn.fetchrow(COUNT_EXPIRED_UNLINKED, created_before)
    assert row is not None
    return ExpiryEstimate(attachments=row["attachments"], new_keys=row["new_keys"])


# Queued keys are the queue's business (it retries them with backoff), not orphans. A
# finalized ticket claims nothing: its attachment claims the key it kept (a form's ticket
# keeps a copy, and what its key holds, posted before or after the finalize, is an orphan).
SELECT_UNCLAIMED_KEYS = """
SELECT k.key FROM unnest($1::text[]) AS k(key)
WHERE NOT EXISTS (SELECT 1 FROM attachments a WHERE a.storage_key = k.key)
  AND NOT EXISTS (SELECT 1 FROM attachments a WHERE a.thumbnail_key = k.key)
  AND NOT EXISTS (SELECT 1 FROM storage_deletions d WHERE d.key = k.key)
  AND NOT EXISTS (
      SELECT 1 FROM upload_tickets t WHERE t.storage_key = k.key AND t.finalized_at IS NULL)
"""


async def select_unclaimed_keys(conn: asyncpg.Connection, keys: Sequence[str]) -> list[str]:
    return [r["key"] for r in await conn.fetch(SELECT_UNCLAIMED_KEYS, list(keys))]
