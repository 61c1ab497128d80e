"""Workspaces (tenants) and memberships; request lookups go through the caller's membership."""

from __future__ import annotations

import asyncpg

from echora_server.db.records import Member, Membership, Role, Workspace
from echora_server.db.users import to_user


def to_workspace(row: asyncpg.Record) -> Workspace:
    return Workspace(row["ws_id"], row["ws_slug"], row["ws_name"], row["ws_created_at"])


_WS = "w.id AS ws_id, w.slug AS ws_slug, w.name AS ws_name, w.created_at AS ws_created_at"

UPSERT_WORKSPACE = f"""
WITH inserted AS (
    INSERT INTO workspaces (slug, name) VALUES ($1, $2)
    ON CONFLICT (slug) DO NOTHING
    RETURNING *
)
SELECT {_WS} FROM inserted w
UNION ALL
SELECT {_WS} FROM workspaces w WHERE w.slug = $1
LIMIT 1
"""


async def ensure_workspace(conn: asyncpg.Connection, slug: str, name: str) -> Workspace:
    row = await conn.fetchrow(UPSERT_WORKSPACE, slug, name)
    assert row is not None
    return to_workspace(row)


SELECT_MEMBERSHIP = f"""
SELECT {_WS}, m.user_id, m.role
FROM memberships m JOIN workspaces w ON w.id = m.workspace_id
WHERE m.workspace_id = $1 AND m.user_id = $2
"""


async def select_membership(
    conn: asyncpg.Connection, workspace_id: int, user_id: int
) -> Membership | None:
    row = await conn.fetchrow(SELECT_MEMBERSHIP, workspace_id, user_id)
    return Membership(to_workspace(row), row["user_id"], row["role"]) if row else None


SELECT_MEMBERSHIPS_OF_USER = f"""
SELECT {_WS}, m.user_id, m.role
FROM memberships m JOIN workspaces w ON w.id = m.workspace_id
WHERE m.user_id = $1
ORDER BY w.id
"""


async def select_memberships_of_user(conn: asyncpg.Connection, user_id: int) -> list[Membership]:
    rows = await conn.fetch(SELECT_MEMBERSHIPS_OF_USER, user_id)
    return [Membership(to_workspace(r), r["user_id"], r["role"]) for r in rows]


UPSERT_MEMBERSHIP = """
INSERT INTO memberships (workspace_id, user_id, role) VALUES ($1, $2, $3)
ON CONFLICT (workspace_id, user_id) DO UPDATE SET role = EXCLUDED.role
RETURNING created_at
"""


async def upsert_membership(
    conn: asyncpg.Connection, workspace_id: int, user_id: int, role: Role
) -> None:
    await conn.execute(UPSERT_MEMBERSHIP, workspace_id, user_id, role)


DELETE_MEMBERSHIP = "DELETE FROM memberships WHERE workspace_id = $1 AND user_id = $2"


async def delete_membership(conn: asyncpg.Connection, workspace_id: int, user_id: int) -> bool:
    status = await conn.execute(DELETE_MEMBERSHIP, workspace_id, user_id)
    return bool(status == "DELETE 1")


COUNT_OWNERS = "SELECT count(*) FROM memberships WHERE workspace_id = $1 AND role = 'owner'"


async def count_owners(conn: asyncpg.Connection, workspace_id: int) -> int:
    return int(await conn.fetchval(COUNT_OWNERS, workspace_id))


SELECT_MEMBERS = """
SELECT u.id, u.username, u.display_name, u.created_at, m.role, m.created_at AS joined_at
FROM memberships m JOIN users u ON u.id = m.user_id
WHERE m.workspace_id = $1
ORDER BY u.username
"""


async def select_members(conn: asyncpg.Connection, workspace_id: int) -> list[Member]:
    rows = await conn.fetch(SELECT_MEMBERS, workspace_id)
    return [Member(to_user(r), r["role"], r["joined_at"]) for r in rows]


LOCK_WORKSPACE = "SELECT id FROM workspaces WHERE id = $1 FOR UPDATE"


async def lock_workspace(conn: asyncpg.Connection, workspace_id: int) -> None:
    await conn.execute(LOCK_WORKSPACE, workspace_id)


SELECT_WORKSPACE_ID = "SELECT id FROM workspaces WHERE slug = $1"


async def select_workspace_id(conn: asyncpg.Connection, slug: str) -> int | None:
    value: int | None = await conn.fetchval(SELECT_WORKSPACE_ID, slug)
    return value


SELECT_WORKSPACE_IDS_OF_USER = """
SELECT workspace_id FROM memberships
WHERE user_id = $1 AND ($2::bigint IS NULL OR workspace_id = $2)
ORDER BY workspace_id
"""


async def select_workspace_ids_of_user(
    conn: asyncpg.Connection, user_id: int, only: int | None = None
) -> list[int]:
    """The user's workspaces (``only``: that one, if the user is in it)."""
    return [
        r["workspace_id"] for r in await conn.fetch(SELECT_WORKSPACE_IDS_OF_USER, user_id, only)
    ]
