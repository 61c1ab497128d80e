"""Channels and their members. Access rules live in ``auth.access`` and ``channels.service``."""

from __future__ import annotations

from typing import Literal

import asyncpg

from echora_server.db.readstate import READ_STATE_COLUMNS, READ_STATE_JOINS, to_read_state
from echora_server.db.records import (
    Channel,
    ChannelAccess,
    ChannelMember,
    ChannelView,
    DirectMessage,
    ListedChannel,
    ListedDirect,
    User,
)
from echora_server.db.users import to_user

_CHANNEL = (
    "c.id, c.workspace_id, c.name, c.topic, c.private, c.created_by, c.created_at, c.kind, "
    "c.archived_at"
)


def to_channel(row: asyncpg.Record) -> Channel:
    return Channel(
        row["id"],
        row["workspace_id"],
        row["name"],
        row["topic"],
        row["private"],
        row["created_by"],
        row["created_at"],
        row["kind"],
        row["archived_at"],
    )


INSERT_CHANNEL = f"""
INSERT INTO channels AS c (workspace_id, name, topic, private, created_by)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (workspace_id, lower(name)) DO NOTHING
RETURNING {_CHANNEL}
"""


async def insert_channel(
    conn: asyncpg.Connection,
    workspace_id: int,
    name: str,
    topic: str,
    private: bool,
    created_by: int,
) -> Channel | None:
    """Create a channel; None when the workspace already has one of that name (any case)."""
    row = await conn.fetchrow(INSERT_CHANNEL, workspace_id, name, topic, private, created_by)
    return to_channel(row) if row else None


# The inner join on memberships makes a channel of another workspace look missing.
SELECT_CHANNEL_ACCESS = f"""
SELECT {_CHANNEL}, m.role, cm.user_id IS NOT NULL AS joined
FROM channels c
JOIN memberships m ON m.workspace_id = c.workspace_id AND m.user_id = $2
LEFT JOIN channel_members cm ON cm.channel_id = c.id AND cm.user_id = $2
WHERE c.id = $1
"""


# Writes to a channel hold its row: FOR SHARE (writing in it) waits for a rename, archive or
# delete in progress and then reads what it committed; those take the stronger locks, so they
# wait for the writes under way. Every path takes the channel's lock before its messages'.
_LOCKS = {
    None: "",
    "share": "FOR SHARE OF c",
    "update": "FOR NO KEY UPDATE OF c",
    "delete": "FOR UPDATE OF c",
}
ChannelLock = Literal["share", "update", "delete"]
SELECT_CHANNEL_ACCESS_LOCKED = {
    lock: f"{SELECT_CHANNEL_ACCESS} {clause}" for lock, clause in _LOCKS.items()
}


async def select_channel_access(
    conn: asyncpg.Connection, channel_id: int, user_id: int, lock: ChannelLock | None = None
) -> ChannelAccess | None:
    """``lock``: hold the channel's row until the caller's transaction ends."""
    row = await conn.fetchrow(SELECT_CHANNEL_ACCESS_LOCKED[lock], channel_id, user_id)
    return ChannelAccess(to_channel(row), row["role"], row["joined"]) if row else None


UPDATE_CHANNEL = f"""
UPDATE channels AS c SET name = coalesce($2, c.name), topic = coalesce($3, c.topic)
WHERE c.id = $1
RETURNING {_CHANNEL}
"""


async def update_channel(
    conn: asyncpg.Connection, channel_id: int, name: str | None, topic: str | None
) -> Channel | None:
    """Rename and/or set the topic (None keeps it); None when the name is taken (any case)."""
    try:
        async with conn.transaction():  # a savepoint: the violation must not end the caller's
            row = await conn.fetchrow(UPDATE_CHANNEL, channel_id, name, topic)
    except asyncpg.UniqueViolationError:
        return None
    assert row is not None, "the caller holds the channel's row"
    return to_channel(row)


SET_ARCHIVED = f"""
UPDATE channels AS c SET archived_at = CASE WHEN $2 THEN now() END
WHERE c.id = $1
RETURNING {_CHANNEL}
"""


async def set_archived(conn: asyncpg.Connection, channel_id: int, archived: bool) -> Channel:
    row = await conn.fetchrow(SET_ARCHIVED, channel_id, archived)
    assert row is not None, "the caller holds the channel's row"
    return to_channel(row)


# The rows the cascade from channels would delete silently, deleted here to learn their
# stored objects (their triggers queue those in storage_deletions all the same): the
# attachments of its messages, its channel-scoped uploads, its tickets not yet finalized.
DELETE_CHANNEL_FILES = """
WITH files AS (
    DELETE FROM attachments a
    WHERE a.channel_id = $1
       OR a.message_id IN (SELECT m.id FROM messages m WHERE m.channel_id = $1)
    RETURNING a.storage_key, a.thumbnail_key
), tickets AS (
    DELETE FROM upload_tickets t WHERE t.channel_id = $1 AND t.finalized_at IS NULL
    RETURNING t.storage_key
)
SELECT storage_key AS key FROM files
UNION ALL SELECT thumbnail_key FROM files WHERE thumbnail_key IS NOT NULL
UNION ALL SELECT storage_key FROM tickets
"""
DELETE_CHANNEL = "DELETE FROM channels WHERE id = $1"


async def delete_channel(conn: asyncpg.Connection, channel_id: int) -> list[str]:
    """Delete the channel with its members, messages and files; returns the storage keys now
    queued for deletion, to delete after the commit."""
    rows = await conn.fetch(DELETE_CHANNEL_FILES, channel_id)
    await conn.execute(DELETE_CHANNEL, channel_id)
    return sorted(r["key"] for r in rows)


# With the user's read state of each: one query, whatever the number of channels.
SELECT_VISIBLE_CHANNELS = f"""
SELECT {_CHANNEL}, cm.user_id IS NOT NULL AS joined, {READ_STATE_COLUMNS}
FROM channels c
LEFT JOIN channel_members cm ON cm.channel_id = c.id AND cm.user_id = $2
{READ_STATE_JOINS}
WHERE c.workspace_id = $1 AND c.kind = 'channel' AND (NOT c.private OR cm.user_id IS NOT NULL)
ORDER BY lower(c.name), c.id
"""


async def select_visible_channels(
    conn: asyncpg.Connection, workspace_id: int, user_id: int
) -> list[ListedChannel]:
    rows = await conn.fetch(SELECT_VISIBLE_CHANNELS, workspace_id, user_id)
    return [ListedChannel(ChannelView(to_channel(r), r["joined"]), to_read_state(r)) for r in rows]


INSERT_CHANNEL_MEMBER = """
INSERT INTO channel_members (channel_id, workspace_id, user_id) VALUES ($1, $2, $3)
ON CONFLICT (channel_id, user_id) DO NOTHING
RETURNING true
"""


async def insert_channel_member(
    conn: asyncpg.Connection, channel_id: int, workspace_id: int, user_id: int
) -> bool:
    """False when already a member; ForeignKeyViolationError when not in the workspace."""
    return bool(await conn.fetchval(INSERT_CHANNEL_MEMBER, channel_id, workspace_id, user_id))


DELETE_CHANNEL_MEMBER = """
WITH gone AS (
    DELETE FROM channel_members WHERE channel_id = $1 AND user_id = $2 RETURNING user_id
)
SELECT u.id, u.username, u.display_name, u.created_at FROM gone JOIN users u ON u.id = gone.user_id
"""


async def delete_channel_member(
    conn: asyncpg.Connection, channel_id: int, user_id: int
) -> User | None:
    row = await conn.fetchrow(DELETE_CHANNEL_MEMBER, channel_id, user_id)
    return to_user(row) if row else None


DELETE_WORKSPACE_CHANNEL_MEMBERSHIPS = """
DELETE FROM channel_members WHERE workspace_id = $1 AND user_id = $2
RETURNING channel_id
"""


async def delete_workspace_channel_memberships(
    conn: asyncpg.Connection, workspace_id: int, user_id: int
) -> list[int]:
    rows = await conn.fetch(DELETE_WORKSPACE_CHANNEL_MEMBERSHIPS, workspace_id, user_id)
    return sorted(r["channel_id"] for r in rows)


_MEMBER = "u.id, u.username, u.display_name, u.created_at, cm.joined_at"

SELECT_CHANNEL_MEMBERS = f"""
SELECT {_MEMBER}
FROM channel_members cm JOIN users u ON u.id = cm.user_id
WHERE cm.channel_id = $1
ORDER BY u.username
"""


async def select_channel_members(conn: asyncpg.Connection, channel_id: int) -> list[ChannelMember]:
    rows = await conn.fetch(SELECT_CHANNEL_MEMBERS, channel_id)
    return [ChannelMember(to_user(r), r["joined_at"]) for r in rows]


SELECT_CHANNEL_MEMBER = f"""
SELECT {_MEMBER}
FROM channel_members cm JOIN users u ON u.id = cm.user_id
WHERE cm.channel_id = $1 AND cm.user_id = $2
"""


async def select_channel_member(
    conn: asyncpg.Connection, channel_id: int, user_id: int
) -> ChannelMember | None:
    row = await conn.fetchrow(SELECT_CHANNEL_MEMBER, channel_id, user_id)
    return ChannelMember(to_user(row), row["joined_at"]) if row else None


SELECT_CHANNEL_IDS_FOR_USER = """
SELECT channel_id, workspace_id FROM channel_members
WHERE user_id = $1 AND ($2::bigint IS NULL OR workspace_id = $2)
ORDER BY channel_id
"""


async def select_channel_ids_for_user(
    conn: asyncpg.Connection, user_id: int, workspace_id: int | None = None
) -> list[tuple[int, int]]:
    """(channel_id, workspace_id) of the user's channels now: what a socket subscribes to.
    The workspace lets the hub drop a workspace's channels when the user leaves it."""
    rows = await conn.fetch(SELECT_CHANNEL_IDS_FOR_USER, user_id, workspace_id)
    return [(r["channel_id"], r["workspace_id"]) for r in rows]


# Direct messages. Any unique violation (the member set, or the name derived from it) means the
# conversation exists: the caller reads it back. A concurrent first insert of the same set
# waits here for the other transaction, then does nothing (or inserts, if that one rolled back).
INSERT_DIRECT = f"""
INSERT INTO channels AS c (workspace_id, name, topic, private, created_by, kind, member_ids)
VALUES ($1, $2, '', true, $3, 'dm', $4::bigint[])
ON CONFLICT DO NOTHING
RETURNING {_CHANNEL}
"""


async def insert_direct(
    conn: asyncpg.Connection, workspace_id: int, name: str, created_by: int, member_ids: list[int]
) -> Channel | None:
    """A new direct message of these members (sorted ids); None when it exists already."""
    row = await conn.fetchrow(INSERT_DIRECT, workspace_id, name, created_by, member_ids)
    return to_channel(row) if row else None


SELECT_DIRECT = f"""
SELECT {_CHANNEL} FROM channels c
WHERE c.workspace_id = $1 AND c.kind = 'dm' AND c.member_ids = $2::bigint[]
"""


async def select_direct(
    conn: asyncpg.Connection, workspace_id: int, member_ids: list[int]
) -> Channel | None:
    row = await conn.fetchrow(SELECT_DIRECT, workspace_id, member_ids)
    return to_channel(row) if row else None


SELECT_WORKSPACE_USERS = """
SELECT u.id, u.username, u.display_name, u.created_at
FROM memberships m JOIN users u ON u.id = m.user_id
WHERE m.workspace_id = $1 AND m.user_id = ANY($2::bigint[])
ORDER BY u.id
"""


async def select_workspace_users(
    conn: asyncpg.Connection, workspace_id: int, user_ids: list[int]
) -> list[User]:
    """Those of ``user_ids`` who are members of the workspace now, by id."""
    rows = await conn.fetch(SELECT_WORKSPACE_USERS, workspace_id, user_ids)
    return [to_user(r) for r in rows]


SELECT_DIRECTS_OF_USER = f"""
SELECT {_CHANNEL}, {READ_STATE_COLUMNS} FROM channels c
JOIN channel_members cm ON cm.channel_id = c.id AND cm.user_id = $2
{READ_STATE_JOINS}
WHERE c.workspace_id = $1 AND c.kind = 'dm'
ORDER BY c.id
"""

SELECT_MEMBERS_OF_CHANNELS = """
SELECT cm.channel_id, u.id, u.username, u.display_name, u.created_at
FROM channel_members cm JOIN users u ON u.id = cm.user_id
WHERE cm.channel_id = ANY($1::bigint[])
ORDER BY cm.channel_id, u.username
"""


async def select_directs_of_user(
    conn: asyncpg.Connection, workspace_id: int, user_id: int
) -> list[ListedDirect]:
    """The user's direct messages in the workspace, oldest first, with their current members
    and the user's read state of each."""
    rows = await conn.fetch(SELECT_DIRECTS_OF_USER, workspace_id, user_id)
    dms = await with_members(conn, [to_channel(r) for r in rows])
    return [ListedDirect(dm, to_read_state(r)) for dm, r in zip(dms, rows, strict=True)]


async def with_members(conn: asyncpg.Connection, found: list[Channel]) -> list[DirectMessage]:
    members: dict[int, list[User]] = {channel.id: [] for channel in found}
    if found:
        for row in await conn.fetch(SELECT_MEMBERS_OF_CHANNELS, list(members)):
            members[row["channel_id"]].append(to_user(row))
    return [DirectMessage(channel, members[channel.id]) for channel in found]
