"""Browser sessions and API tokens. Only sha256 digests of the secrets are stored."""

from __future__ import annotations

import datetime as dt

import asyncpg

from echora_server.db.records import ApiToken, Credential
from echora_server.db.users import to_user

INSERT_SESSION = "INSERT INTO sessions (token_hash, user_id, expires_at) VALUES ($1, $2, $3)"


async def insert_session(
    conn: asyncpg.Connection, token_hash: bytes, user_id: int, expires_at: dt.datetime
) -> None:
    await conn.execute(INSERT_SESSION, token_hash, user_id, expires_at)


DELETE_SESSION = "DELETE FROM sessions WHERE token_hash = $1"


async def delete_session(conn: asyncpg.Connection, token_hash: bytes) -> None:
    await conn.execute(DELETE_SESSION, token_hash)


DELETE_EXPIRED_SESSIONS = "DELETE FROM sessions WHERE expires_at <= $1"


async def delete_expired_sessions(conn: asyncpg.Connection, now: dt.datetime) -> int:
    status = await conn.execute(DELETE_EXPIRED_SESSIONS, now)
    return int(status.split()[-1])


COUNT_EXPIRED_SESSIONS = "SELECT count(*) FROM sessions WHERE expires_at <= $1"


async def count_expired_sessions(conn: asyncpg.Connection, now: dt.datetime) -> int:
    return int(await conn.fetchval(COUNT_EXPIRED_SESSIONS, now))


SELECT_SESSION_CREDENTIAL = """
SELECT u.id, u.username, u.display_name, u.created_at, s.expires_at
FROM sessions s JOIN users u ON u.id = s.user_id
WHERE s.token_hash = $1
"""


async def select_session_credential(
    conn: asyncpg.Connection, token_hash: bytes
) -> Credential | None:
    row = await conn.fetchrow(SELECT_SESSION_CREDENTIAL, token_hash)
    if row is None:
        return None
    return Credential(to_user(row), None, None, row["expires_at"], revoked=False)


_TOKEN = "id, user_id, workspace_id, name, hint, created_at, expires_at, last_used_at, revoked_at"


def to_token(row: asyncpg.Record) -> ApiToken:
    return ApiToken(*(row[c] for c in _TOKEN.split(", ")))


INSERT_TOKEN = f"""
INSERT INTO api_tokens (user_id, workspace_id, name, token_hash, hint, expires_at)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING {_TOKEN}
"""


async def insert_token(
    conn: asyncpg.Connection,
    user_id: int,
    workspace_id: int | None,
    name: str,
    token_hash: bytes,
    hint: str,
    expires_at: dt.datetime | None,
) -> ApiToken:
    row = await conn.fetchrow(
        INSERT_TOKEN, user_id, workspace_id, name, token_hash, hint, expires_at
    )
    assert row is not None
    return to_token(row)


# last_used_at is refreshed at most once a minute so a busy bot does not write every request.
SELECT_TOKEN_CREDENTIAL = """
WITH hit AS (
    UPDATE api_tokens SET last_used_at = now()
    WHERE token_hash = $1
      AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')
    RETURNING id
)
SELECT u.id, u.username, u.display_name, u.created_at,
       t.id AS token_id, t.workspace_id, t.expires_at, t.revoked_at
FROM api_tokens t JOIN users u ON u.id = t.user_id
WHERE t.token_hash = $1
"""


async def select_token_credential(conn: asyncpg.Connection, token_hash: bytes) -> Credential | None:
    row = await conn.fetchrow(SELECT_TOKEN_CREDENTIAL, token_hash)
    if row is None:
        return None
    return Credential(
        to_user(row),
        row["token_id"],
        row["workspace_id"],
        row["expires_at"],
        revoked=row["revoked_at"] is not None,
    )


SELECT_TOKENS_OF_USER = f"SELECT {_TOKEN} FROM api_tokens WHERE user_id = $1 ORDER BY id"


async def select_tokens_of_user(conn: asyncpg.Connection, user_id: int) -> list[ApiToken]:
    return [to_token(r) for r in await conn.fetch(SELECT_TOKENS_OF_USER, user_id)]


REVOKE_TOKEN = """
UPDATE api_tokens SET revoked_at = coalesce(revoked_at, now())
WHERE id = $1 AND user_id = $2
RETURNING id
"""


async def revoke_token(conn: asyncpg.Connection, token_id: int, user_id: int) -> bool:
    return await conn.fetchval(REVOKE_TOKEN, token_id, user_id) is not None
