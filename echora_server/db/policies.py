"""Workspace upload settings (sql/0009) and the stored-bytes figures the quotas count. The
settings ride along the queries that authorise an upload, so a policy costs no round trip."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import asyncpg

from echora_server.db.channels import _CHANNEL, to_channel
from echora_server.db.records import ChannelAccess, Membership
from echora_server.db.workspaces import _WS, to_workspace


@dataclass(frozen=True, slots=True)
class WorkspaceSettings:
    """None: no limit of the workspace's own (``allowed_types`` None: every type)."""

    max_file_size: int | None = None
    allowed_types: tuple[str, ...] | None = None
    denied_types: tuple[str, ...] = ()
    tickets: bool = True
    direct_uploads: bool = True
    storage_quota: int | None = None
    member_quota: int | None = None
    bot_quota: int | None = None


SETTING_NAMES: tuple[str, ...] = tuple(f.name for f in fields(WorkspaceSettings))

# Read through a LEFT JOIN: a workspace without a row has the defaults.
SETTINGS_COLUMNS = """
s.max_file_size AS s_max_file_size, s.allowed_types AS s_allowed_types,
coalesce(s.denied_types, '{}') AS s_denied_types, coalesce(s.tickets, true) AS s_tickets,
coalesce(s.direct_uploads, true) AS s_direct_uploads, s.storage_quota AS s_storage_quota,
s.member_quota AS s_member_quota, s.bot_quota AS s_bot_quota
"""


def to_settings(row: asyncpg.Record) -> WorkspaceSettings:
    allowed = row["s_allowed_types"]
    return WorkspaceSettings(
        max_file_size=row["s_max_file_size"],
        allowed_types=tuple(allowed) if allowed is not None else None,
        denied_types=tuple(row["s_denied_types"]),
        tickets=row["s_tickets"],
        direct_uploads=row["s_direct_uploads"],
        storage_quota=row["s_storage_quota"],
        member_quota=row["s_member_quota"],
        bot_quota=row["s_bot_quota"],
    )


SELECT_SETTINGS = f"""
SELECT {SETTINGS_COLUMNS} FROM workspaces w
LEFT JOIN workspace_settings s ON s.workspace_id = w.id WHERE w.id = $1
"""


async def select_settings(conn: asyncpg.Connection, workspace_id: int) -> WorkspaceSettings:
    row = await conn.fetchrow(SELECT_SETTINGS, workspace_id)
    return to_settings(row) if row is not None else WorkspaceSettings()


ENSURE_SETTINGS = """
INSERT INTO workspace_settings (workspace_id) VALUES ($1) ON CONFLICT (workspace_id) DO NOTHING
"""
LOCK_SETTINGS = f"""
SELECT {SETTINGS_COLUMNS} FROM workspace_settings s WHERE s.workspace_id = $1 FOR UPDATE
"""
UPDATE_SETTINGS = """
UPDATE workspace_settings SET
    max_file_size = $2, allowed_types = $3, denied_types = $4, tickets = $5,
    direct_uploads = $6, storage_quota = $7, member_quota = $8, bot_quota = $9,
    updated_at = now()
WHERE workspace_id = $1
"""


async def update_settings(
    conn: asyncpg.Connection, workspace_id: int, changes: Mapping[str, Any]
) -> WorkspaceSettings:
    """Apply ``changes`` (setting name: new value) over the current row, under its lock so
    two changes of different settings both stand."""
    async with conn.transaction():
        await conn.execute(ENSURE_SETTINGS, workspace_id)
        row = await conn.fetchrow(LOCK_SETTINGS, workspace_id)
        if row is None:
            raise RuntimeError("ENSURE_SETTINGS made the row")
        current = {name: getattr(to_settings(row), name) for name in SETTING_NAMES}
        merged = WorkspaceSettings(**{**current, **changes})
        await conn.execute(
            UPDATE_SETTINGS,
            workspace_id,
            merged.max_file_size,
            list(merged.allowed_types) if merged.allowed_types is not None else None,
            list(merged.denied_types),
            merged.tickets,
            merged.direct_uploads,
            merged.storage_quota,
            merged.member_quota,
            merged.bot_quota,
        )
    return merged


# An upload's target and its workspace's settings in the one query that authorises it.
SELECT_CHANNEL_TARGET = f"""
SELECT {_CHANNEL}, m.role, cm.user_id IS NOT NULL AS joined, {SETTINGS_COLUMNS}
FROM channels c
JOIN memberships m ON m.workspace_id = c.workspace_id AND m.user_id = $2
LEFT JOIN channel_members cm ON cm.channel_id = c.id AND cm.user_id = $2
LEFT JOIN workspace_settings s ON s.workspace_id = c.workspace_id
WHERE c.id = $1
"""


async def select_channel_target(
    conn: asyncpg.Connection, channel_id: int, user_id: int
) -> tuple[ChannelAccess | None, WorkspaceSettings]:
    row = await conn.fetchrow(SELECT_CHANNEL_TARGET, channel_id, user_id)
    if row is None:
        return None, WorkspaceSettings()
    return ChannelAccess(to_channel(row), row["role"], row["joined"]), to_settings(row)


SELECT_MEMBERSHIPS_WITH_SETTINGS = f"""
SELECT {_WS}, m.user_id, m.role, {SETTINGS_COLUMNS}
FROM memberships m JOIN workspaces w ON w.id = m.workspace_id
LEFT JOIN workspace_settings s ON s.workspace_id = m.workspace_id
WHERE m.user_id = $1 AND ($2::bigint IS NULL OR m.workspace_id = $2)
ORDER BY w.id
"""


async def select_memberships_with_settings(
    conn: asyncpg.Connection, user_id: int, workspace_id: int | None = None
) -> list[tuple[Membership, WorkspaceSettings]]:
    """The user's memberships (only ``workspace_id``'s when given), each with its settings."""
    rows = await conn.fetch(SELECT_MEMBERSHIPS_WITH_SETTINGS, user_id, workspace_id)
    return [(Membership(to_workspace(r), r["user_id"], r["role"]), to_settings(r)) for r in rows]


@dataclass(frozen=True, slots=True)
class Usage:
    """Stored bytes and bytes reserved by open tickets: the workspace's and one user's."""

    workspace_stored: int
    workspace_reserved: int
    user_stored: int
    user_reserved: int


SELECT_USAGE = """
SELECT
    (SELECT coalesce(sum(u.bytes), 0) FROM upload_usage u WHERE u.workspace_id = $1)
        AS workspace_stored,
    (SELECT coalesce(sum(t.size), 0) FROM upload_tickets t
     WHERE t.workspace_id = $1 AND t.finalized_at IS NULL AND ticket_reserves(t, $3))
        AS workspace_reserved,
    (SELECT coalesce(sum(u.bytes), 0) FROM upload_usage u
     WHERE u.workspace_id = $1 AND u.user_id = $2) AS user_stored,
    (SELECT coalesce(sum(t.size), 0) FROM upload_tickets t
     WHERE t.workspace_id = $1 AND t.owner_id = $2 AND t.finalized_at IS NULL
       AND ticket_reserves(t, $3)) AS user_reserved
"""


async def select_usage(
    conn: asyncpg.Connection, workspace_id: int, user_id: int, now: dt.datetime
) -> Usage:
    row = await conn.fetchrow(SELECT_USAGE, workspace_id, user_id, now)
    if row is None:
        raise RuntimeError("SELECT_USAGE yields one row")
    return Usage(*(int(value) for value in row.values()))


@dataclass(frozen=True, slots=True)
class QuotaRefusal:
    quota: str  # "workspace", "member" or "bot"
    bytes_used: int
    bytes_allowed: int


def to_refusal(value: str | None) -> QuotaRefusal | None:
    """What ``quota_refusal()`` (sql/0009) returned, as jsonb text."""
    if value is None:
        return None
    found = json.loads(value)
    return QuotaRefusal(found["quota"], int(found["bytes_used"]), int(found["bytes_allowed"]))
