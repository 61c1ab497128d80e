"""Read positions, mentions, and the counts they give (``sql/0015_read_state.sql``)."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from echora_server.db.records import ReadState

# For a query over ``channels c`` and the caller's ``channel_members cm`` (a LEFT JOIN may leave
# cm's columns NULL: a channel the caller is not in, whose counts are then 0 and which costs no
# scan). Before any position, the messages since joining count: the scan starts after the last
# message older than the join (found walking back from the newest, so through the messages
# since joining only). At most UNREAD_CAP messages are counted per channel, so a long unread
# backlog costs a bounded range scan of messages_channel_idx (named by c.id: through cm's
# nullable column the planner walks the primary key instead), each message's mention by key.
UNREAD_CAP = 1000
READ_STATE_COLUMNS = """
rs.last_read_message_id, coalesce(n.unread, 0) AS unread_count,
coalesce(n.mentions, 0) AS mention_count
"""
READ_STATE_JOINS = f"""
LEFT JOIN read_states rs ON rs.channel_id = c.id AND rs.user_id = cm.user_id
LEFT JOIN LATERAL (
    SELECT count(*) AS unread, count(*) FILTER (WHERE u.mentioned) AS mentions
    FROM (
        SELECT EXISTS (
                   SELECT 1 FROM message_mentions mm
                   WHERE mm.message_id = m.id AND mm.user_id = cm.user_id
               ) AS mentioned
        FROM messages m
        WHERE cm.user_id IS NOT NULL
          AND m.channel_id = c.id
          AND m.id > coalesce(rs.last_read_message_id, (
              SELECT before.id FROM messages before
              WHERE before.channel_id = c.id AND before.created_at < cm.joined_at
              ORDER BY before.id DESC LIMIT 1
          ), 0)
          AND m.author_id <> cm.user_id
          AND (rs.user_id IS NOT NULL OR m.created_at >= cm.joined_at)
        ORDER BY m.id
        LIMIT {UNREAD_CAP}
    ) u
) n ON true
"""


def to_read_state(row: asyncpg.Record) -> ReadState:
    return ReadState(row["last_read_message_id"], row["unread_count"], row["mention_count"])


# Only a message of the channel; only forward (an older id leaves the newer position). A
# member no longer in the channel: ForeignKeyViolationError.
ADVANCE_READ_STATE = """
WITH target AS (
    SELECT m.id FROM messages m WHERE m.id = $3 AND m.channel_id = $1
), moved AS (
    INSERT INTO read_states AS rs (channel_id, user_id, last_read_message_id)
    SELECT $1, $2, target.id FROM target
    ON CONFLICT (channel_id, user_id) DO UPDATE
        SET last_read_message_id = EXCLUDED.last_read_message_id, updated_at = now()
        WHERE rs.last_read_message_id < EXCLUDED.last_read_message_id
    RETURNING 1
)
SELECT EXISTS (SELECT 1 FROM target) AS found, EXISTS (SELECT 1 FROM moved) AS moved
"""


async def advance_read_state(
    conn: asyncpg.Connection, channel_id: int, user_id: int, message_id: int
) -> tuple[bool, bool]:
    """(whether the message is one of the channel's, whether the position moved)."""
    row = await conn.fetchrow(ADVANCE_READ_STATE, channel_id, user_id, message_id)
    return row["found"], row["moved"]


SELECT_READ_STATE = f"""
SELECT {READ_STATE_COLUMNS}
FROM channels c
JOIN channel_members cm ON cm.channel_id = c.id AND cm.user_id = $2
{READ_STATE_JOINS}
WHERE c.id = $1
"""


async def select_read_state(
    conn: asyncpg.Connection, channel_id: int, user_id: int
) -> ReadState | None:
    """None when the user is not in the channel."""
    row = await conn.fetchrow(SELECT_READ_STATE, channel_id, user_id)
    return to_read_state(row) if row else None


# The message's mentions become those of ``$3`` who are in its channel now, its author aside:
# the others' rows go (an edit that took a name out), the new ones come.
RECORD_MENTIONS = """
WITH named AS (
    SELECT cm.user_id FROM channel_members cm JOIN users u ON u.id = cm.user_id
    WHERE cm.channel_id = $2 AND u.username = ANY($3::text[]) AND cm.user_id <> $4
), dropped AS (
    DELETE FROM message_mentions mm
    WHERE mm.message_id = $1 AND mm.user_id NOT IN (SELECT user_id FROM named)
)
INSERT INTO message_mentions (message_id, user_id)
SELECT $1, user_id FROM named
ON CONFLICT DO NOTHING
"""


async def record_mentions(
    conn: asyncpg.Connection,
    message_id: int,
    channel_id: int,
    author_id: int,
    usernames: Sequence[str],
) -> None:
    await conn.execute(RECORD_MENTIONS, message_id, channel_id, list(usernames), author_id)
