"""Account operations shared by the REST handlers and the CLI."""

from __future__ import annotations

import datetime as dt
import re

import asyncpg

from echora_server.auth import passwords
from echora_server.auth.secrets import API_TOKEN_PREFIX, SESSION_PREFIX, digest, hint, new_secret
from echora_server.core.errors import Conflict, InvalidRequest
from echora_server.db import credentials, users, workspaces
from echora_server.db.records import ApiToken, Role, User, Workspace

USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
WORKSPACE_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


def normalise_username(username: str) -> str:
    name = username.strip().lower()
    if not USERNAME.match(name):
        raise InvalidRequest(
            "A username is 1-63 characters: letters, digits, '.', '_' or '-', "
            "starting with a letter or digit.",
            details={"field": "username"},
        )
    return name


def normalise_slug(slug: str) -> str:
    value = slug.strip().lower()
    if not WORKSPACE_SLUG.match(value):
        raise InvalidRequest(
            "A workspace name is 1-63 characters: letters, digits or '-'.",
            details={"field": "workspace"},
        )
    return value


async def create_user(
    conn: asyncpg.Connection,
    *,
    workspace_slug: str,
    username: str,
    password: str | None,
    role: Role = "member",
    display_name: str = "",
) -> tuple[User, Workspace]:
    """Create a user in a workspace, creating the workspace if needed.

    The first member of a new workspace becomes its owner whatever role was asked for
    (a workspace always has an owner)."""
    name = normalise_username(username)
    slug = normalise_slug(workspace_slug)
    if password is not None and (problem := passwords.password_problem(password)):
        raise InvalidRequest(problem[0].upper() + problem[1:] + ".", details={"field": "password"})
    password_hash = await passwords.hash_password(password) if password is not None else None
    async with conn.transaction():
        user = await users.insert_user(conn, name, display_name.strip()[:100], password_hash)
        if user is None:
            raise Conflict(f"The username {name!r} is taken.", code="username_taken")
        workspace = await workspaces.ensure_workspace(conn, slug, slug)
        if await workspaces.count_owners(conn, workspace.id) == 0 and role != "bot":
            role = "owner"
        await workspaces.upsert_membership(conn, workspace.id, user.id, role)
    return user, workspace


async def issue_api_token(
    conn: asyncpg.Connection,
    user_id: int,
    name: str,
    *,
    workspace_id: int | None = None,
    expires_in: dt.timedelta | None = None,
) -> tuple[ApiToken, str]:
    """A new API token; the secret is returned once and never stored."""
    secret = new_secret(API_TOKEN_PREFIX)
    expires_at = dt.datetime.now(dt.UTC) + expires_in if expires_in else None
    token = await credentials.insert_token(
        conn, user_id, workspace_id, name, digest(secret), hint(secret), expires_at
    )
    return token, secret


async def start_session(conn: asyncpg.Connection, user_id: int, ttl: dt.timedelta) -> str:
    secret = new_secret(SESSION_PREFIX)
    await credentials.insert_session(conn, digest(secret), user_id, dt.datetime.now(dt.UTC) + ttl)
    return secret


async def check_password(conn: asyncpg.Connection, username: str, password: str) -> User | None:
    """The user when the password is right; None otherwise (same timing either way)."""
    found = await users.select_login(conn, username.strip().lower())
    user, password_hash = found if found else (None, None)
    ok = await passwords.verify_password(password_hash, password)
    if not ok or user is None or password_hash is None:
        return None
    if passwords.needs_rehash(password_hash):
        await users.update_password_hash(conn, user.id, await passwords.hash_password(password))
    return user
