"""Accounts: users, passwords, browser sessions and API tokens. The functions taking a
connection serve the CLI too; ``AccountService`` serves requests."""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
from aiohttp import web

from echora_server.auth import passwords
from echora_server.auth.identity import Identity
from echora_server.auth.secrets import API_TOKEN_PREFIX, SESSION_PREFIX, digest, hint, new_secret
from echora_server.auth.token_cache import TOKEN_CACHE, TokenCache
from echora_server.config import CONFIG
from echora_server.core.errors import Conflict, InvalidRequest, NotFound, Unauthorized
from echora_server.core.ratelimit import RateLimiter, refuse
from echora_server.core.validation import SPACES, check_text
from echora_server.db import credentials, users, workspaces
from echora_server.db.pool import POOL
from echora_server.db.records import ApiToken, Membership, Role, User, Workspace
from echora_server.realtime.bus import BUS, EventBus
from echora_server.realtime.events import CREDENTIAL_REVOKED, NO_WORKSPACE, Event

MAX_TOKEN_NAME = 100
USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
# A name that is a username once stripped and lowercased, for the document.
USERNAME_PATTERN = f"^[{SPACES}]*[A-Za-z0-9][A-Za-z0-9._-]{{0,62}}[{SPACES}]*$"
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
    """Create a user in a workspace (created if needed). A non-bot joining a workspace with no
    owner becomes its owner whatever role was asked for: a workspace always has one."""
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


TOO_MANY_LOGINS = "Too many login attempts; wait and try again."


class LoginLimits:
    """Password attempts, counted three ways so no one address can lock a user out:
    failures per address and username (``per_minute``); attempts per address, whatever the
    username (3x); failures per username from every address (5x) — once those run out, only
    an address that has not failed for that username lately may still try."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.pair = RateLimiter(per_minute, burst=per_minute, clock=clock)
        self.address = RateLimiter(3 * per_minute, burst=3 * per_minute, clock=clock)
        self.username = RateLimiter(5 * per_minute, burst=5 * per_minute, clock=clock)

    def before(self, remote: str | None, username: str) -> None:
        pair = (remote, username)
        refuse(self.pair.wait(pair), TOO_MANY_LOGINS)
        if not self.pair.untouched(pair):
            refuse(self.username.wait(username), TOO_MANY_LOGINS)
        self.address.take(remote, TOO_MANY_LOGINS)

    def failed(self, remote: str | None, username: str) -> None:
        self.pair.charge((remote, username))
        self.username.charge(username)


class AccountService:
    def __init__(
        self,
        pool: asyncpg.Pool,
        bus: EventBus,
        login_limits: LoginLimits,
        session_ttl: dt.timedelta,
        tokens: TokenCache | None = None,
    ) -> None:
        self._pool = pool
        self._bus = bus
        self._tokens = tokens if tokens is not None else TokenCache(0)
        self._login_limits = login_limits
        self.session_ttl = session_ttl

    async def password_login(self, remote: str | None, username: str, password: str) -> User:
        name = username.strip().lower()
        self._login_limits.before(remote, name)
        async with self._pool.acquire() as conn:
            user = await check_password(conn, username, password)
        if user is None:
            self._login_limits.failed(remote, name)
            raise Unauthorized("Wrong username or password.", code="invalid_credentials")
        return user

    async def log_in(
        self, remote: str | None, username: str, password: str
    ) -> tuple[User, str, list[Membership]]:
        user = await self.password_login(remote, username, password)
        async with self._pool.acquire() as conn:
            secret = await start_session(conn, user.id, self.session_ttl)
            memberships = await workspaces.select_memberships_of_user(conn, user.id)
        return user, secret, memberships

    async def log_out(self, identity: Identity) -> None:
        if identity.session_digest is None:
            return
        async with self._pool.acquire() as conn:
            await credentials.delete_session(conn, identity.session_digest)
        await self._revoked(identity.user.id, {"session": identity.session_digest.hex()})

    async def memberships(self, identity: Identity) -> list[Membership]:
        """The caller's workspaces, those their token may reach."""
        async with self._pool.acquire() as conn:
            found = await workspaces.select_memberships_of_user(conn, identity.user.id)
        return [m for m in found if identity.may_use_workspace(m.workspace.id)]

    async def create_token(
        self,
        user: User,
        name: str,
        *,
        workspace_id: int | None,
        expires_in: dt.timedelta | None,
    ) -> tuple[ApiToken, str]:
        name = check_text(name.strip(), "name", min_length=1, max_length=MAX_TOKEN_NAME)
        async with self._pool.acquire() as conn:
            if workspace_id is not None and not await workspaces.select_membership(
                conn, workspace_id, user.id
            ):
                raise NotFound("Workspace not found.")
            return await issue_api_token(
                conn, user.id, name, workspace_id=workspace_id, expires_in=expires_in
            )

    async def list_tokens(self, identity: Identity) -> list[ApiToken]:
        async with self._pool.acquire() as conn:
            return await credentials.select_tokens_of_user(conn, identity.user.id)

    async def revoke_token(self, identity: Identity, token_id: int) -> None:
        async with self._pool.acquire() as conn:
            if not await credentials.revoke_token(conn, token_id, identity.user.id):
                raise NotFound("Token not found.")
        self._tokens.forget_token(token_id)  # here at once; other processes on the event
        await self._revoked(identity.user.id, {"token_id": token_id})

    async def _revoked(self, user_id: int, credential: dict[str, Any]) -> None:
        """Close the sockets opened with a credential that no longer works, everywhere."""
        event = Event(CREDENTIAL_REVOKED, NO_WORKSPACE, None, credential, user_id=user_id)
        await self._bus.publish(event)


ACCOUNTS = web.AppKey("accounts", AccountService)


async def accounts_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    limiter = LoginLimits(config.login_rate_per_minute)
    ttl = dt.timedelta(seconds=config.session_ttl)
    app[ACCOUNTS] = AccountService(app[POOL], app[BUS], limiter, ttl, app[TOKEN_CACHE])
    yield
