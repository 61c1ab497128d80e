"""Bot accounts: a user with a delivery mode, in the workspace it was created in."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import asyncpg

from echora_server.db.records import Bot
from echora_server.db.users import to_user

_COLUMNS = """
u.id, u.username, u.display_name, u.created_at,
b.workspace_id, b.delivery, b.callback_url, b.created_at AS bot_created_at,
b.callback_disabled_at, b.last_delivered_at, b.last_delivery_error, b.last_delivery_error_at
"""


def to_bot(row: asyncpg.Record) -> Bot:
    return Bot(
        to_user(row),
        row["workspace_id"],
        row["delivery"],
        row["callback_url"],
        row["bot_created_at"],
        row["callback_disabled_at"],
        row["last_delivered_at"],
        row["last_delivery_error"],
        row["last_delivery_error_at"],
    )


INSERT_BOT = f"""
WITH b AS (
    INSERT INTO bots (user_id, workspace_id, delivery, callback_url, created_by, webhook_secret)
    VALUES ($1, $2, $3, $4, $5, $6)
    RETURNING *
)
SELECT {_COLUMNS} FROM b JOIN users u ON u.id = b.user_id
"""


async def insert_bot(
    conn: asyncpg.Connection,
    user_id: int,
    workspace_id: int,
    delivery: str,
    callback_url: str | None,
    created_by: int | None,
    webhook_secret: str | None = None,
) -> Bot:
    row = await conn.fetchrow(
        INSERT_BOT, user_id, workspace_id, delivery, callback_url, created_by, webhook_secret
    )
    assert row is not None
    return to_bot(row)


SELECT_BOT = f"SELECT {_COLUMNS} FROM bots b JOIN users u ON u.id = b.user_id WHERE b.user_id = $1"


async def select_bot(conn: asyncpg.Connection, user_id: int) -> Bot | None:
    row = await conn.fetchrow(SELECT_BOT, user_id)
    return to_bot(row) if row else None


SELECT_WORKSPACE_BOTS = f"""
SELECT {_COLUMNS} FROM bots b JOIN users u ON u.id = b.user_id
WHERE b.workspace_id = $1
ORDER BY u.username
"""


async def select_workspace_bots(conn: asyncpg.Connection, workspace_id: int) -> list[Bot]:
    return [to_bot(row) for row in await conn.fetch(SELECT_WORKSPACE_BOTS, workspace_id)]


UPDATE_DELIVERY = f"""
WITH b AS (
    -- Setting the delivery again is how an admin turns a disabled callback (410) back on.
    UPDATE bots SET delivery = $2, callback_url = $3, callback_disabled_at = NULL
    WHERE user_id = $1 RETURNING *
)
SELECT {_COLUMNS} FROM b JOIN users u ON u.id = b.user_id
"""


async def update_delivery(
    conn: asyncpg.Connection, user_id: int, delivery: str, callback_url: str | None
) -> Bot | None:
    row = await conn.fetchrow(UPDATE_DELIVERY, user_id, delivery, callback_url)
    return to_bot(row) if row else None


SET_FIRST_SECRET = """
UPDATE bots SET webhook_secret = $2 WHERE user_id = $1 AND webhook_secret IS NULL
"""


async def set_first_secret(conn: asyncpg.Connection, user_id: int, secret: str) -> bool:
    """Gives the bot this signing secret unless it has one; whether it took it."""
    status = await conn.execute(SET_FIRST_SECRET, user_id, secret)
    return bool(status == "UPDATE 1")


ROTATE_SECRET = """
UPDATE bots SET
    previous_webhook_secret = webhook_secret,
    previous_secret_until = CASE WHEN webhook_secret IS NULL THEN NULL
                                 ELSE now() + make_interval(secs => $3) END,
    webhook_secret = $2
WHERE user_id = $1
RETURNING previous_secret_until
"""


async def rotate_secret(
    conn: asyncpg.Connection, user_id: int, secret: str, overlap_seconds: float
) -> dt.datetime | None:
    """The new secret signs from now on; the one it replaces keeps signing for the overlap.
    Returns when the previous one stops (None: there was none)."""
    value: dt.datetime | None = await conn.fetchval(ROTATE_SECRET, user_id, secret, overlap_seconds)
    return value


SELECT_BACKLOGS = """
SELECT bot_id, count(*) AS backlog FROM inbox_entries
WHERE bot_id = ANY($1::bigint[]) AND acked_at IS NULL AND expires_at > now()
GROUP BY bot_id
"""


async def select_backlogs(conn: asyncpg.Connection, user_ids: Sequence[int]) -> dict[int, int]:
    """Unacknowledged live entries per bot (bots with none are absent)."""
    rows = await conn.fetch(SELECT_BACKLOGS, list(user_ids))
    return {row["bot_id"]: row["backlog"] for row in rows}
