"""Reactions: one row per user, message and emoji; a message's emoji are ordered by first use
(the smallest id among their rows)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from echora_server.db.records import ReactionCount


@dataclass(frozen=True, slots=True)
class ReactionChange:
    changed: bool  # False: it was already there (add) or not there (remove)
    count: int  # how many reactions with this emoji the message has now


# The message row locked FOR NO KEY UPDATE until the commit: reactions to one message (and
# its edits) take turns, so each change counts what the one before it committed. A deleted
# message (or one deleted while this waited) gives no row.
LOCK_MESSAGE = "SELECT channel_id FROM messages WHERE id = $1 FOR NO KEY UPDATE"


async def lock_message(conn: asyncpg.Connection, message_id: int) -> int | None:
    """The message's channel id, the row locked for the caller's transaction."""
    channel_id: int | None = await conn.fetchval(LOCK_MESSAGE, message_id)
    return channel_id


# The count's subquery sees the table as before the statement: the CTE's row is added.
INSERT_REACTION = """
WITH added AS (
    INSERT INTO reactions (message_id, user_id, emoji) VALUES ($1, $2, $3)
    ON CONFLICT (message_id, emoji, user_id) DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(*) FROM added) AS changed,
       (SELECT count(*) FROM reactions WHERE message_id = $1 AND emoji = $3)
       + (SELECT count(*) FROM added) AS count
"""


async def insert_reaction(
    conn: asyncpg.Connection, message_id: int, user_id: int, emoji: str
) -> ReactionChange:
    row = await conn.fetchrow(INSERT_REACTION, message_id, user_id, emoji)
    return ReactionChange(row["changed"] > 0, row["count"])


DELETE_REACTION = """
WITH removed AS (
    DELETE FROM reactions WHERE message_id = $1 AND user_id = $2 AND emoji = $3
    RETURNING 1
)
SELECT (SELECT count(*) FROM removed) AS changed,
       (SELECT count(*) FROM reactions WHERE message_id = $1 AND emoji = $3)
       - (SELECT count(*) FROM removed) AS count
"""


async def delete_reaction(
    conn: asyncpg.Connection, message_id: int, user_id: int, emoji: str
) -> ReactionChange:
    row = await conn.fetchrow(DELETE_REACTION, message_id, user_id, emoji)
    return ReactionChange(row["changed"] > 0, row["count"])


SELECT_REACTIONS_OF_MESSAGES = """
SELECT message_id, emoji, count(*) AS count, coalesce(bool_or(user_id = $2), false) AS mine
FROM reactions
WHERE message_id = ANY($1::bigint[])
GROUP BY message_id, emoji
ORDER BY message_id, min(id)
"""


async def select_reactions_of_messages(
    conn: asyncpg.Connection, message_ids: Sequence[int], viewer_id: int | None
) -> dict[int, list[ReactionCount]]:
    """Every reaction of a page in one query; ``mine`` for ``viewer_id`` (None: nobody)."""
    found: dict[int, list[ReactionCount]] = {}
    if not message_ids:
        return found
    for row in await conn.fetch(SELECT_REACTIONS_OF_MESSAGES, list(message_ids), viewer_id):
        reaction = ReactionCount(row["emoji"], row["count"], row["mine"])
        found.setdefault(row["message_id"], []).append(reaction)
    return found
