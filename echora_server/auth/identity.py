"""The caller (cookie or Bearer token), looked up per request. A token may come from the
short cache of verified tokens (``auth.token_cache``), which revocations clear everywhere."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

from aiohttp import web

from echora_server.audit.tally import TALLY
from echora_server.auth.csrf import check_csrf
from echora_server.auth.secrets import API_TOKEN_PREFIX, SESSION_PREFIX, digest, well_formed
from echora_server.auth.token_cache import TOKEN_CACHE
from echora_server.core.errors import Unauthorized
from echora_server.db import credentials
from echora_server.db.pool import POOL
from echora_server.db.records import User

SESSION_COOKIE = "echora_session"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True, slots=True)
class Identity:
    user: User
    via: Literal["session", "token"]
    token_id: int | None = None
    # A token restricted to one workspace may not reach any other.
    token_workspace_id: int | None = None
    session_digest: bytes | None = None

    def may_use_workspace(self, workspace_id: int) -> bool:
        return self.token_workspace_id is None or self.token_workspace_id == workspace_id

    def credential_key(self) -> int | str | None:
        """What a revocation names: the token id, or the session digest in hex."""
        if self.token_id is not None:
            return self.token_id
        return self.session_digest.hex() if self.session_digest is not None else None


IDENTITY: web.RequestKey[Identity | None] = web.RequestKey("identity")


def bearer_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip() or None


async def _resolve(request: web.Request) -> Identity | None:
    token = bearer_token(request)
    if token is not None:
        return await _resolve_token(request, token)
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie is not None:
        return await _resolve_session(request, cookie)
    return None


async def _resolve_token(request: web.Request, token: str) -> Identity:
    tally = request.app[TALLY]
    invalid = Unauthorized("The API token is not valid.", code="invalid_token")
    if not well_formed(token, API_TOKEN_PREFIX):
        tally.token_refused(invalid.code)
        raise invalid
    token_digest = digest(token)
    cache = request.app[TOKEN_CACHE]
    credential = cache.get(token_digest)
    if credential is None:
        generation = cache.generation()
        async with request.app[POOL].acquire() as conn:
            credential = await credentials.select_token_credential(conn, token_digest)
        if credential is None:
            tally.token_refused(invalid.code)
            raise invalid
        if credential.revoked:
            tally.token_refused("token_revoked", credential.workspace_id, credential.user.id)
            raise Unauthorized("The API token was revoked.", code="token_revoked")
        cache.put(token_digest, credential, generation)
    if credential.expires_at is not None and credential.expires_at <= dt.datetime.now(dt.UTC):
        tally.token_refused("token_expired", credential.workspace_id, credential.user.id)
        raise Unauthorized("The API token has expired.", code="token_expired")
    return Identity(credential.user, "token", credential.token_id, credential.workspace_id)


async def _resolve_session(request: web.Request, cookie: str) -> Identity:
    expired = Unauthorized("Your session has expired; log in again.", code="session_expired")
    if not well_formed(cookie, SESSION_PREFIX):
        raise expired
    session_digest = digest(cookie)
    async with request.app[POOL].acquire() as conn:
        credential = await credentials.select_session_credential(conn, session_digest)
    if credential is None or (
        credential.expires_at is not None and credential.expires_at <= dt.datetime.now(dt.UTC)
    ):
        raise expired
    return Identity(credential.user, "session", session_digest=session_digest)


async def current_identity(request: web.Request) -> Identity | None:
    """The caller, or None when no credential was presented. Bad credentials raise 401."""
    if IDENTITY not in request:
        request[IDENTITY] = await _resolve(request)
    identity = request[IDENTITY]
    if identity is not None and identity.via == "session" and request.method not in SAFE_METHODS:
        # Cookies ride along on cross-site requests; tokens do not, so only sessions need this.
        check_csrf(request)
    return identity


async def require_identity(request: web.Request) -> Identity:
    identity = await current_identity(request)
    if identity is None:
        raise Unauthorized()
    return identity
