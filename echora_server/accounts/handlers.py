"""Log in and out (browser sessions), who am I, and API tokens (curl, bots, agents)."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from aiohttp import web
from pydantic import Field

from echora_server.accounts.service import ACCOUNTS, MAX_TOKEN_NAME
from echora_server.accounts.shapes import (
    Membership,
    Token,
    User,
    membership_json,
    token_json,
    user_json,
)
from echora_server.auth.csrf import check_csrf
from echora_server.auth.identity import SESSION_COOKIE, current_identity, require_identity
from echora_server.config import CONFIG
from echora_server.core.errors import NotFound, Unauthorized
from echora_server.core.route import Route
from echora_server.core.shapes import Shape
from echora_server.core.validation import MAX_ID, Body, path_id, read_json, text_pattern


class LoginBody(Body):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class TokenBody(Body):
    name: str = Field(
        min_length=1,
        max_length=MAX_TOKEN_NAME,
        json_schema_extra={"pattern": text_pattern(blank=False)},
    )
    workspace_id: int | None = Field(
        None, ge=1, le=MAX_ID, description="Restrict the token to one workspace."
    )
    expires_in_days: int | None = Field(None, ge=1, le=3650)
    # Either be logged in, or give a username and password (curl, first bot setup).
    username: str | None = Field(None, max_length=64)
    password: str | None = Field(None, max_length=1024)


def _secure(request: web.Request) -> bool:
    """As configured; else https as the public URL, or the client behind a trusted proxy,
    sees it."""
    config = request.app[CONFIG]
    if config.cookie_secure is not None:
        return config.cookie_secure
    return config.secure_cookies or request.secure


class LoggedIn(Shape):
    user: User
    workspaces: list[Membership]


class LoggedOut(Shape):
    ok: Literal[True]


class Me(Shape):
    user: User
    auth: Literal["session", "token"] = Field(description="How this request authenticated.")
    workspaces: list[Membership] = Field(description="Those my credential may reach.")


class NewToken(Token):
    token: str = Field(description="The secret, shown only here.")


class Tokens(Shape):
    tokens: list[Token]


async def login(request: web.Request) -> web.Response:
    # A login form posted from a foreign site would log the victim into our account.
    check_csrf(request, browser_only=True)
    body = await read_json(request, LoginBody)
    accounts = request.app[ACCOUNTS]
    user, secret, memberships = await accounts.log_in(request.remote, body.username, body.password)
    response = web.json_response(
        {"user": user_json(user), "workspaces": [membership_json(m) for m in memberships]}
    )
    response.set_cookie(
        SESSION_COOKIE,
        secret,
        max_age=int(accounts.session_ttl.total_seconds()),
        httponly=True,
        samesite="Lax",
        secure=_secure(request),
        path="/",
    )
    return response


async def logout(request: web.Request) -> web.Response:
    try:
        identity = await current_identity(request)
    except Unauthorized:
        identity = None  # an expired session is logged out already
    if identity is not None:
        await request.app[ACCOUNTS].log_out(identity)
    response = web.json_response({"ok": True})
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


async def get_me(request: web.Request) -> web.Response:
    identity = await require_identity(request)
    memberships = await request.app[ACCOUNTS].memberships(identity)
    return web.json_response(
        {
            "user": user_json(identity.user),
            "auth": identity.via,
            "workspaces": [membership_json(m) for m in memberships],
        }
    )


async def create_token(request: web.Request) -> web.Response:
    body = await read_json(request, TokenBody)
    accounts = request.app[ACCOUNTS]
    workspace_id = body.workspace_id
    if body.username is not None or body.password is not None:
        user = await accounts.password_login(
            request.remote, body.username or "", body.password or ""
        )
    else:
        identity = await require_identity(request)
        if identity.token_workspace_id is not None:
            # A scoped token must not mint a broader one.
            if workspace_id not in (None, identity.token_workspace_id):
                raise NotFound("Workspace not found.")
            workspace_id = identity.token_workspace_id
        user = identity.user
    expires = dt.timedelta(days=body.expires_in_days) if body.expires_in_days else None
    token, secret = await accounts.create_token(
        user, body.name, workspace_id=workspace_id, expires_in=expires
    )
    return web.json_response({"token": secret, **token_json(token)}, status=201)


async def list_tokens(request: web.Request) -> web.Response:
    identity = await require_identity(request)
    tokens = await request.app[ACCOUNTS].list_tokens(identity)
    return web.json_response({"tokens": [token_json(t) for t in tokens]})


async def revoke_token(request: web.Request) -> web.Response:
    identity = await require_identity(request)
    token_id = path_id(request, "token_id", "Token not found.")
    await request.app[ACCOUNTS].revoke_token(identity, token_id)
    return web.Response(status=204)


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
        schemas={200: LoggedIn},
    ),
    Route(
        "POST",
        "/api/auth/logout",
        logout,
        "Log out (ends the session)",
        "auth",
        authenticated=False,
        schemas={200: LoggedOut},
    ),
    Route(
        "POST",
        "/api/tokens",
        create_token,
        "Create an API token (logged in, or with username and password)",
        "auth",
        body=TokenBody,
        authenticated=False,
        responses={
            201: "The token; its secret is shown only here",
            401: "Not authenticated",
            404: "No such workspace of mine (workspace_id)",
        },
        schemas={201: NewToken},
    ),
    Route("GET", "/api/me", get_me, "Who am I, and my workspaces", "workspaces", schemas={200: Me}),
    Route("GET", "/api/tokens", list_tokens, "List my API tokens", "auth", schemas={200: Tokens}),
    Route(
        "DELETE",
        "/api/tokens/{token_id}",
        revoke_token,
        "Revoke one of my API tokens",
        "auth",
        responses={204: "Revoked", 404: "No such token of mine"},
    ),
)
