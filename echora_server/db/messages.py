"""Messages; ids are the order and the paging cursor. Known limit: ids are taken at INSERT,
so a reader paging ``after`` may pass a message that commits later with a smaller id."""

from __future__ import annotations

import json
from collections.abc import Sequence

import asyncpg

from echora_server.db.records import Link, Message, User

_MESSAGE = """
m.id, m.channel_id, m.workspace_id, m.content, m.client_id, m.created_at, m.edited_at,
m.links, u.id AS author_id, u.username, u.display_name, u.created_at AS author_created_at
"""


def to_message(row: asyncpg.Record) -> Message:
    author = User(row["author_id"], row["username"], row["display_name"], row["author_created_at"])
    return Message(
        row["id"],
        row["channel_id"],
        row["workspace_id"],
        author,
        row["content"],
        row["client_id"],
        row["created_at"],
        row["edited_at"],
        # jsonb arrives as text (the pool sets no codec); the server wrote and checked it.
        tuple(Link(link["url"], link["title"]) for link in json.loads(row["links"])),
    )


# Built from the author's channel membership, locked FOR KEY SHARE: a concurrent removal
# commits first (nothing inserted) or waits. A reused client_id returns no row.
INSERT_MESSAGE = f"""
WITH m AS (
    INSERT INTO messages (channel_id, workspace_id, author_id, content, client_id, links)
    SELECT cm.channel_id, cm.workspace_id, cm.user_id, $3, $4, $5::jsonb
    FROM channel_members cm
    WHERE cm.channel_id = $1 AND cm.user_id = $2
    FOR KEY SHARE
    ON CONFLICT (author_id, channel_id, client_id) DO NOTHING
    RETURNING *
)
SELECT {_MESSAGE} FROM m JOIN users u ON u.id = m.author_id
"""


async def insert_message(
    conn: asyncpg.Connection,
    channel_id: int,
    author_id: int,
    content: str,
    client_id: str | None,
    links: Sequence[Link] = (),
) -> Message | None:
    """Post as a current channel member; None when not one or the client_id was used."""
    encoded = json.dumps([{"url": link.url, "title": link.title} for link in links])
    row = await conn.fetchrow(INSERT_MESSAGE, channel_id, author_id, content, client_id, encoded)
    return to_message(row) if row else None


SELECT_MESSAGE_BY_CLIENT_ID = f"""
SELECT {_MESSAGE} FROM messages m JOIN users u ON u.id = m.author_id
WHERE m.author_id = $1 AND m.channel_id = $2 AND m.client_id = $3
"""


async def select_message_by_client_id(
    conn: asyncpg.Connection, author_id: int, channel_id: int, client_id: str
) -> Message | None:
    row = await conn.fetchrow(SELECT_MESSAGE_BY_CLIENT_ID, author_id, channel_id, client_id)
    return to_message(row) if row else None


SELECT_MESSAGE = f"""
SELECT {_MESSAGE} FROM messages m JOIN users u ON u.id = m.author_id WHERE m.id = $1
"""


async def select_message(conn: asyncpg.Connection, message_id: int) -> Message | None:
    row = await conn.fetchrow(SELECT_MESSAGE, message_id)
    return to_message(row) if row else None


SELECT_MESSAGES_BEFORE = f"""
SELECT {_MESSAGE} FROM messages m JOIN users u ON u.id = m.author_id
WHERE m.channel_id = $1 AND m.id < $2
ORDER BY m.id DESC
LIMIT $3
"""


async def select_messages_before(
    conn: asyncpg.Connection, channel_id: int, before_id: int, limit: int
) -> list[Message]:
    rows = await conn.fetch(SELECT_MESSAGES_BEFORE, channel_id, before_id, limit)
    return [to_message(r) for r in rows]


SELECT_MESSAGES_AFTER = f"""
SELECT {_MESSAGE} FROM messages m JOIN users u ON u.id = m.author_id
WHERE m.channel_id = $1 AND m.id > $2
ORDER BY m.id
LIMIT $3
"""


async def select_messages_after(
    conn: asyncpg.Connection, channel_id: int, after_id: int, limit: int
) -> list[Message]:
    rows = await conn.fetch(SELECT_MESSAGES_AFTER, channel_id, after_id, limit)
    return [to_message(r) for r in rows]


SELECT_MESSAGES_AFTER_FOR_USER = f"""
SELECT {_MESSAGE}
FROM channel_members cm
JOIN messages m ON m.channel_id = cm.channel_id AND m.id > $2
JOIN users u ON u.id = m.author_id
WHERE cm.user_id = $1 AND ($4::bigint IS NULL OR cm.workspace_id = $4)
ORDER BY m.id
LIMIT $3
"""


async def select_messages_after_for_user(
    conn: asyncpg.Connection,
    user_id: int,
    after_id: int,
    limit: int,
    workspace_id: int | None = None,
) -> list[Message]:
    """What a reconnecting socket missed: later messages in the channels the user is in now."""
    rows = await conn.fetch(SELECT_MESSAGES_AFTER_FOR_USER, user_id, after_id, limit, workspace_id)
    return [to_message(r) for r in rows]


UPDATE_MESSAGE_CONTENT = f"""
WITH m AS (
    UPDATE messages SET content = $2, edited_at = now() WHERE id = $1 RETURNING *
)
SELECT {_MESSAGE} FROM m JOIN users u ON u.id = m.author_id
"""


async def update_message_content(
    conn: asyncpg.Connection, message_id: int, content: str
) -> Message | None:
    row = await conn.fetchrow(UPDATE_MESSAGE_CONTENT, message_id, content)
    return to_message(row) if row else None


DELETE_MESSAGE = "DELETE FROM messages WHERE id = $1 RETURNING id"


async def delete_message(conn: asyncpg.Connection, message_id: int) -> bool:
    return await conn.fetchval(DELETE_MESSAGE, message_id) is not None
