"""The queue of objects to delete (``storage_deletions``): filled by the attachment trigger
(sql/0003), by deletes the storage refused, and by failed writes with what they left (sql/0005:
the pending upload to abort before the key is deleted)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import asyncpg

QUEUE_DELETIONS = """
INSERT INTO storage_deletions (key) SELECT unnest($1::text[])
ON CONFLICT (key) DO NOTHING
"""


async def queue_deletions(conn: asyncpg.Connection, keys: Sequence[str]) -> None:
    await conn.execute(QUEUE_DELETIONS, list(keys))


QUEUE_LEFTOVER = """
INSERT INTO storage_deletions (key, upload_id) VALUES ($1, $2)
ON CONFLICT (key) DO UPDATE
SET upload_id = coalesce(EXCLUDED.upload_id, storage_deletions.upload_id), not_before = now()
"""


async def queue_leftover(conn: asyncpg.Connection, key: str, upload_id: str | None) -> None:
    """Due at once: the next pass aborts ``upload_id`` (if any), then deletes ``key``."""
    await conn.execute(QUEUE_LEFTOVER, key, upload_id)


DEQUEUE_DELETIONS = "DELETE FROM storage_deletions WHERE key = ANY($1::text[])"


async def dequeue_deletions(conn: asyncpg.Connection, keys: Sequence[str]) -> None:
    await conn.execute(DEQUEUE_DELETIONS, list(keys))


# A claimed key is due again after this lease, in case its sweeper dies before the delete.
CLAIM_LEASE = dt.timedelta(minutes=10)
# A failed delete is retried after 1, 2, 4 … minutes, at most 15 minutes apart: soon after
# the store is back, and a refused key costs one call per pass.
RETRY_FIRST = dt.timedelta(minutes=1)
RETRY_MAX = dt.timedelta(minutes=15)

# A key a row claims again is never deleted, whatever queued it: it is skipped, and stays
# queued until a sweep finds it unclaimed.
_UNCLAIMED = """
NOT EXISTS (SELECT 1 FROM attachments a WHERE a.storage_key = d.key)
AND NOT EXISTS (SELECT 1 FROM attachments a WHERE a.thumbnail_key = d.key)
"""

CLAIM_DELETIONS = f"""
WITH due AS (
    SELECT d.key FROM storage_deletions d
    WHERE d.not_before <= $1 AND {_UNCLAIMED}
    ORDER BY d.not_before
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
UPDATE storage_deletions d SET not_before = $1 + $3::interval
FROM due WHERE d.key = due.key
RETURNING d.key, d.upload_id
"""


async def claim_deletions(
    conn: asyncpg.Connection, now: dt.datetime, limit: int
) -> dict[str, str | None]:
    """Up to ``limit`` due keys (with the upload to abort first, if any), leased to the caller
    for CLAIM_LEASE."""
    rows = await conn.fetch(CLAIM_DELETIONS, now, limit, CLAIM_LEASE)
    return {r["key"]: r["upload_id"] for r in rows}


POSTPONE_DELETIONS = """
UPDATE storage_deletions
SET attempts = attempts + 1,
    not_before = $2::timestamptz
        + least($3::interval * power(2, least(attempts, 20)), $4::interval)
WHERE key = ANY($1::text[])
"""


async def postpone_deletions(
    conn: asyncpg.Connection, keys: Sequence[str], now: dt.datetime
) -> None:
    """Storage refused these deletes: try again later, backing off with each attempt."""
    await conn.execute(POSTPONE_DELETIONS, list(keys), now, RETRY_FIRST, RETRY_MAX)


COUNT_DUE_DELETIONS = f"""
SELECT count(*) FROM storage_deletions d WHERE d.not_before <= $1 AND {_UNCLAIMED}
"""


async def count_due_deletions(conn: asyncpg.Connection, now: dt.datetime) -> int:
    count: int = await conn.fetchval(COUNT_DUE_DELETIONS, now)
    return count
