"""Push delivery's rows: each push-mode bot's oldest unacknowledged live entry is its head,
the only one in flight. A sender claims the head (``FOR UPDATE SKIP LOCKED``) and moves its
``next_attempt_at`` past the attempt's timeout in the same statement: that is its lease, so
a crashed sender's claim runs out and two processes never send one attempt."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from echora_server.db.records import PushClaim

# Every bot that pushes, with how long until its head is due (0: now; NULL: nothing owed).
SELECT_HEADS = """
SELECT b.user_id AS bot_id,
       CASE WHEN h.id IS NOT NULL THEN greatest(
           coalesce(extract(epoch FROM h.next_attempt_at - now()), 0), 0)::float8 END AS wait
FROM bots b LEFT JOIN LATERAL (
    SELECT e.id, e.next_attempt_at FROM inbox_entries e
    WHERE e.bot_id = b.user_id AND e.acked_at IS NULL AND e.expires_at > now()
    ORDER BY e.id LIMIT 1
) h ON true
WHERE b.delivery = 'push' AND b.callback_disabled_at IS NULL
"""


async def select_heads(conn: asyncpg.Connection) -> list[tuple[int, float | None]]:
    """(bot id, seconds until its head is due, None when nothing is owed) per pushing bot."""
    return [(row["bot_id"], row["wait"]) for row in await conn.fetch(SELECT_HEADS)]


# Each asked bot's head is picked first, then locked: SKIP LOCKED must never skip to the
# second entry (order), so a head another sender holds means nothing to do. The lock re-reads
# the row, so a head acknowledged or claimed meanwhile is not taken either. Several bots in
# one statement (each once).
CLAIM_HEADS = """
WITH head AS (
    SELECT h.bot_id, h.id FROM unnest($1::bigint[]) AS a(bot_id) CROSS JOIN LATERAL (
        SELECT e.bot_id, e.id FROM inbox_entries e
        WHERE e.bot_id = a.bot_id AND e.acked_at IS NULL AND e.expires_at > now()
        ORDER BY e.id LIMIT 1
    ) h
), claimed AS (
    SELECT e.bot_id, e.id FROM inbox_entries e JOIN head USING (bot_id, id)
    WHERE e.acked_at IS NULL AND e.expires_at > now()
      AND (e.next_attempt_at IS NULL OR e.next_attempt_at <= now())
    FOR UPDATE OF e SKIP LOCKED
)
UPDATE inbox_entries e
SET next_attempt_at = now() + make_interval(secs => $2), attempts = e.attempts + 1
FROM claimed, bots b
WHERE e.bot_id = claimed.bot_id AND e.id = claimed.id AND b.user_id = e.bot_id
  AND b.delivery = 'push' AND b.callback_disabled_at IS NULL
  AND b.callback_url IS NOT NULL AND b.webhook_secret IS NOT NULL
RETURNING e.bot_id, e.workspace_id, e.id, e.type, e.body::text AS body, e.created_at,
          e.expires_at, e.attempts, b.callback_url, b.webhook_secret,
          CASE WHEN b.previous_secret_until > now() THEN b.previous_webhook_secret END
              AS previous_secret
"""


async def claim_heads(
    conn: asyncpg.Connection, bot_ids: Sequence[int], lease_seconds: float
) -> dict[int, PushClaim]:
    """Each bot's head entry for one attempt, if it is due and no other sender holds it."""
    claims = {}
    for row in await conn.fetch(CLAIM_HEADS, list(bot_ids), lease_seconds):
        secrets: tuple[str, ...] = (row["webhook_secret"],)
        if row["previous_secret"] is not None:
            secrets += (row["previous_secret"],)
        claims[row["bot_id"]] = PushClaim(
            row["bot_id"],
            row["workspace_id"],
            row["id"],
            row["type"],
            row["body"],
            row["created_at"],
            row["expires_at"],
            row["attempts"],
            row["callback_url"],
            secrets,
        )
    return claims


# Only the claim's own attempt is settled: one that ran past its lease and was taken over
# changes nothing.
# Several claims in one statement; the bots' rows are locked in id order, so two processes'
# statements never wait for each other in a circle.
DELIVERED = """
WITH d AS (
    SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::int[]) AS d(bot_id, id, attempts)
), e AS (
    UPDATE inbox_entries i SET acked_at = now(), next_attempt_at = NULL, leased_until = NULL
    FROM d
    WHERE i.bot_id = d.bot_id AND i.id = d.id AND i.attempts = d.attempts
      AND i.acked_at IS NULL
    RETURNING i.bot_id
), b AS (
    SELECT user_id FROM bots WHERE user_id IN (SELECT bot_id FROM e)
    ORDER BY user_id FOR NO KEY UPDATE
)
UPDATE bots SET last_delivered_at = now() FROM b WHERE bots.user_id = b.user_id
"""


async def mark_delivered(conn: asyncpg.Connection, claims: Sequence[PushClaim]) -> None:
    await conn.execute(
        DELIVERED,
        [claim.bot_id for claim in claims],
        [claim.entry_id for claim in claims],
        [claim.attempt for claim in claims],
    )


# A failure sets the next attempt (NULL when disabling: due once the callback is back on).
FAILED = """
WITH e AS (
    UPDATE inbox_entries
    SET next_attempt_at = CASE WHEN $6 THEN NULL ELSE now() + make_interval(secs => $4) END
    WHERE bot_id = $1 AND id = $2 AND attempts = $3 AND acked_at IS NULL
    RETURNING bot_id
)
UPDATE bots SET last_delivery_error = $5, last_delivery_error_at = now(),
    callback_disabled_at = CASE WHEN $6 THEN now() ELSE callback_disabled_at END
WHERE user_id IN (SELECT bot_id FROM e)
"""


async def mark_failed(
    conn: asyncpg.Connection, claim: PushClaim, retry_in: float, error: str, *, disable: bool
) -> None:
    await conn.execute(
        FAILED, claim.bot_id, claim.entry_id, claim.attempt, retry_in, error[:200], disable
    )


RELEASE = """
UPDATE inbox_entries SET next_attempt_at = NULL
WHERE bot_id = $1 AND id = $2 AND attempts = $3 AND acked_at IS NULL
"""


async def release(conn: asyncpg.Connection, claim: PushClaim) -> None:
    """An attempt cut short (shutdown): due again at once, for any process."""
    await conn.execute(RELEASE, claim.bot_id, claim.entry_id, claim.attempt)
