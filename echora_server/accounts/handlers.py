"""Log in and out (browser sessions) and manage API tokens (curl, bots, agents)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from aiohttp import web
from pydantic import Field

from echora_server.accounts import service as accounts
from echora_server.accounts.shapes import membership_json, token_json, user_json
from echora_server.auth.csrf import check_csrf
from echora_server.auth.identity import SESSION_COOKIE, current_identity, require_identity
from echora_server.core.errors import NotFound, TooManyRequests, Unauthorized
from echora_server.core.route import Route
from echora_server.core.validation import Body, path_id, read_json
from echora_server.db import credentials, workspaces
from echora_server.db.records import User
from echora_server.keys import CONFIG, LOGIN_LIMITER, POOL
from echora_server.realtime.events import CREDENTIAL_REVOKED, NO_WORKSPACE, Event, publish


class LoginBody(Body):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class TokenBody(Body):
    name: str = Field(min_length=1, max_length=100)
    workspace_id: int | None = Field(None, ge=1, description="Restrict the token to one workspace.")
    expires_in_days: int | None = Field(None, ge=1, le=3650)
    # Either be logged in, or give a username and password (curl, first bot setup).
    username: str | None = Field(None, max_length=64)
    password: str | None = Field(None, max_length=1024)


async def _password_login(request: web.Request, username: str, password: str) -> User:
    retry_after = request.app[LOGIN_LIMITER].hit((request.remote, username.strip().lower()))
    if retry_after:
        raise TooManyRequests(
            "Too many login attempts; wait and try again.",
            headers={"Retry-After": str(int(retry_after) + 1)},
        )
    async with request.app[POOL].acquire() as conn:
        user = await accounts.check_password(conn, username, password)
    if user is None:
        raise Unauthorized("Wrong username or password.", code="invalid_credentials")
    return user


async def login(request: web.Request) -> web.Response:
    # A login form posted from a foreign site would log the victim into our account.
    check_csrf(request, browser_only=True)
    body = await read_json(request, LoginBody)
    user = await _password_login(request, body.username, body.password)
    config = request.app[CONFIG]
    ttl = dt.timedelta(hours=config.session_ttl_hours)
    async with request.app[POOL].acquire() as conn:
        secret = await accounts.start_session(conn, user.id, ttl)
        memberships = await workspaces.select_memberships_of_user(conn, user.id)
    response = web.json_response(
        {"user": user_json(user), "workspaces": [membership_json(m) for m in memberships]}
    )
    response.set_cookie(
        SESSION_COOKIE,
        secret,
        max_age=int(ttl.total_seconds()),
        httponly=True,
        samesite="Lax",
        secure=config.secure_cookies,
        path="/",
    )
    return response


async def logout(request: web.Request) -> web.Response:
    try:
        identity = await current_identity(request)
    except Unauthorized:
        identity = None  # an expired session is logged out already
    if identity is not None and identity.session_digest is not None:
        async with request.app[POOL].acquire() as conn:
            await credentials.delete_session(conn, identity.session_digest)
        await _revoked(request, identity.user.id, {"session": identity.session_digest.hex()})
    response = web.json_response({"ok": True})
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


async def create_token(request: web.Request) -> web.Response:
    body = await read_json(request, TokenBody)
    if body.username is not None or body.password is not None:
        user = await _password_login(request, body.username or "", body.password or "")
    else:
        identity = await require_identity(request)
        if identity.token_workspace_id is not None:
            # A scoped token must not mint a broader one.
            if body.workspace_id not in (None, identity.token_workspace_id):
                raise NotFound("Workspace not found.")
            body = body.model_copy(update={"workspace_id": identity.token_workspace_id})
        user = identity.user
    async with request.app[POOL].acquire() as conn:
        if body.workspace_id is not None and not await workspaces.select_membership(
            conn, body.workspace_id, user.id
        ):
            raise NotFound("Workspace not found.")
        expires = dt.timedelta(days=body.expires_in_days) if body.expires_in_days else None
        token, secret = await accounts.issue_api_token(
            conn, user.id, body.name, workspace_id=body.workspace_id, expires_in=expires
        )
    return web.json_response({"token": secret, **token_json(token)}, status=201)


async def list_tokens(request: web.Request) -> web.Response:
    identity = await require_identity(request)
    async with request.app[POOL].acquire() as conn:
        tokens = await credentials.select_tokens_of_user(conn, identity.user.id)
    return web.json_response({"tokens": [token_json(t) for t in tokens]})


async def revoke_token(request: web.Request) -> web.Response:
    identity = await require_identity(request)
    token_id = path_id(request, "token_id", "Token not found.")
    async with request.app[POOL].acquire() as conn:
        if not await credentials.revoke_token(conn, token_id, identity.user.id):
            raise NotFound("Token not found.")
    await _revoked(request, identity.user.id, {"token_id": token_id})
    return web.Response(status=204)


async def _revoked(request: web.Request, user_id: int, credential: dict[str, Any]) -> None:
    """Close the sockets opened with a credential that no longer works (on every process)."""
    event = Event(CREDENTIAL_REVOKED, NO_WORKSPACE, None, credential, user_id=user_id)
    await publish(request.app, event)


ROUTES: tuple[Route, ...] = (
    Route(
        "POST",
        "/api/auth/login",
        login,
        "Log in with a password (sets the session cookie)",
        "auth",
        body=LoginBody,
        authenticated=False,
        responses={200: "Logged in", 401: "Wrong username or password", 429: "Too many attempts"},
    ),
    Route(
        "POST",
        "/api/auth/logout",
        logout,
        "Log out (ends the session)",
        "auth",
        authenticated=False,
    ),
    Route(
        "POST",
        "/api/tokens",
        create_token,
        "Create an API token (logged in, or with username and password)",
        "auth",
        body=TokenBody,
        authenticated=False,
        responses={201: "The token; its secret is shown only here", 401: "Not authenticated"},
    ),
    Route("GET", "/api/tokens", list_tokens, "List my API tokens", "auth"),
    Route(
        "DELETE",
        "/api/tokens/{token_id}",
        revoke_token,
        "Revoke one of my API tokens",
        "auth",
        responses={204: "Revoked", 404: "No such token of mine"},
    ),
)
