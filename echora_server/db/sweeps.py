"""Queries of the cleanup sweeps (echora_server/sweeper.py).

Every statement is short and autocommitted on its own: rows are claimed or locked with
``FOR UPDATE SKIP LOCKED`` in small batches, so several sweepers (one per server process)
never wait on each other, and none holds a transaction while storage is talked to. Times
are the sweep's ``now`` (a parameter, so tests can sweep at a fixed instant), never the
database clock.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

# A claimed key is not due again for this long: if the sweeper dies between the claim
# and the delete, another one retries the key once the lease runs out.
CLAIM_LEASE = dt.timedelta(minutes=10)
# A failed delete is retried after 1, 2, 4 … minutes, at most 6 hours apart.
RETRY_FIRST = dt.timedelta(minutes=1)
RETRY_MAX = dt.timedelta(hours=6)

# A key that a row claims again is never deleted (invariant 1, whatever queued it): it is
# skipped, and stays queued until a sweep finds it unclaimed.
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
RETURNING d.key
"""


async def claim_deletions(conn: asyncpg.Connection, now: dt.datetime, limit: int) -> list[str]:
    """Up to ``limit`` due keys, leased to the caller for CLAIM_LEASE."""
    rows = await conn.fetch(CLAIM_DELETIONS, now, limit, CLAIM_LEASE)
    return [r["key"] for r in rows]


FORGET_DELETIONS = "DELETE FROM storage_deletions WHERE key = ANY($1::text[])"


async def forget_deletions(conn: asyncpg.Connection, keys: Sequence[str]) -> None:
    """Drop the queue rows of objects now deleted."""
    await conn.execute(FORGET_DELETIONS, list(keys))


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


# Unlinked only, checked twice: the lock skips rows a linking transaction holds, and the
# outer re-check drops any row linked between the snapshot and the lock. A link and this
# delete therefore never both succeed: whichever locks the row first wins.
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

# The trigger queues at the database's clock, which is later than the sweep's ``now``
# (taken when the sweep began, or fixed by a test): without this, the pass that deleted
# the rows would not find their objects due, and they would wait for the next one.
MAKE_DUE = """
UPDATE storage_deletions SET not_before = $2
WHERE key = ANY($1::text[]) AND attempts = 0 AND not_before > $2
"""


async def delete_expired_unlinked(
    conn: asyncpg.Connection, created_before: dt.datetime, now: dt.datetime, limit: int
) -> int:
    """Delete up to ``limit`` unlinked attachments created before ``created_before``; the
    trigger of sql/0003 queues their objects, due at ``now``. How many went."""
    async with conn.transaction():
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


# Queued keys are the queue's business (it retries them with backoff), not orphans.
SELECT_UNCLAIMED_KEYS = """
SELECT k.key FROM unnest($1::text[]) AS k(key)
WHERE NOT EXISTS (SELECT 1 FROM attachments a WHERE a.storage_key = k.key)
  AND NOT EXISTS (SELECT 1 FROM attachments a WHERE a.thumbnail_key = k.key)
  AND NOT EXISTS (SELECT 1 FROM storage_deletions d WHERE d.key = k.key)
"""


async def select_unclaimed_keys(conn: asyncpg.Connection, keys: Sequence[str]) -> list[str]:
    """The keys among ``keys`` that no attachment row and no queued deletion names."""
    return [r["key"] for r in await conn.fetch(SELECT_UNCLAIMED_KEYS, list(keys))]
