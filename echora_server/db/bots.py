"""Bot accounts: a user with a delivery mode, in the workspace it was created in."""

from __future__ import annotations

import asyncpg

from echora_server.db.records import Bot
from echora_server.db.users import to_user

_COLUMNS = """
u.id, u.username, u.display_name, u.created_at,
b.workspace_id, b.delivery, b.callback_url, b.created_at AS bot_created_at
"""


def to_bot(row: asyncpg.Record) -> Bot:
    return Bot(
        to_user(row),
        row["workspace_id"],
        row["delivery"],
        row["callback_url"],
        row["bot_created_at"],
    )


INSERT_BOT = f"""
WITH b AS (
    INSERT INTO bots (user_id, workspace_id, delivery, callback_url, created_by)
    VALUES ($1, $2, $3, $4, $5)
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
) -> Bot:
    row = await conn.fetchrow(INSERT_BOT, user_id, workspace_id, delivery, callback_url, created_by)
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
    UPDATE bots SET delivery = $2, callback_url = $3 WHERE user_id = $1 RETURNING *
)
SELECT {_COLUMNS} FROM b JOIN users u ON u.id = b.user_id
"""


async def update_delivery(
    conn: asyncpg.Connection, user_id: int, delivery: str, callback_url: str | None
) -> Bot | None:
    row = await conn.fetchrow(UPDATE_DELIVERY, user_id, delivery, callback_url)
    return to_bot(row) if row else None
