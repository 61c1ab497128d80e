"""Users."""

from __future__ import annotations

import asyncpg

from echora_server.db.records import User

_COLUMNS = "id, username, display_name, created_at"


def _storable(text: str) -> bool:
    """PostgreSQL text holds no NUL: no username has one, and asking for one would fail
    in the driver (a 500) rather than find nobody."""
    return "\x00" not in text


def to_user(row: asyncpg.Record) -> User:
    return User(row["id"], row["username"], row["display_name"], row["created_at"])


INSERT_USER = f"""
INSERT INTO users (username, display_name, password_hash) VALUES ($1, $2, $3)
ON CONFLICT (username) DO NOTHING
RETURNING {_COLUMNS}
"""


async def insert_user(
    conn: asyncpg.Connection, username: str, display_name: str, password_hash: str | None
) -> User | None:
    row = await conn.fetchrow(INSERT_USER, username, display_name, password_hash)
    return to_user(row) if row else None


SELECT_USER = f"SELECT {_COLUMNS} FROM users WHERE id = $1"


async def select_user(conn: asyncpg.Connection, user_id: int) -> User | None:
    row = await conn.fetchrow(SELECT_USER, user_id)
    return to_user(row) if row else None


SELECT_USER_BY_NAME = f"SELECT {_COLUMNS} FROM users WHERE username = $1"


async def select_user_by_username(conn: asyncpg.Connection, username: str) -> User | None:
    if not _storable(username):
        return None
    row = await conn.fetchrow(SELECT_USER_BY_NAME, username)
    return to_user(row) if row else None


SELECT_LOGIN = f"SELECT {_COLUMNS}, password_hash FROM users WHERE username = $1"


async def select_login(conn: asyncpg.Connection, username: str) -> tuple[User, str | None] | None:
    if not _storable(username):
        return None
    row = await conn.fetchrow(SELECT_LOGIN, username)
    return (to_user(row), row["password_hash"]) if row else None


UPDATE_PASSWORD_HASH = "UPDATE users SET password_hash = $2 WHERE id = $1"


async def update_password_hash(conn: asyncpg.Connection, user_id: int, password_hash: str) -> None:
    await conn.execute(UPDATE_PASSWORD_HASH, user_id, password_hash)
