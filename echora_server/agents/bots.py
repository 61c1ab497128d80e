"""Bot accounts: a workspace's owners and admins create them and set how they get events.
A bot is a user with no password, the workspace role ``bot`` and a token scoped to its
workspace; from there it joins, uploads, posts and downloads exactly as users do."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
from aiohttp import web

from echora_server.accounts.service import issue_api_token, normalise_username
from echora_server.agents.callbacks import callback_url_required, check_callback_url
from echora_server.agents.webhooks import new_webhook_secret
from echora_server.auth.access import require_manager
from echora_server.auth.identity import Identity
from echora_server.config import CONFIG
from echora_server.core.errors import Conflict, NotFound
from echora_server.core.validation import check_text
from echora_server.db import bots, users, workspaces
from echora_server.db.pool import POOL
from echora_server.db.records import Bot, Delivery

MAX_DISPLAY_NAME = 100
BOT_NOT_FOUND = "Bot not found."
TOKEN_NAME = "bot"  # noqa: S105 (a label, not a secret)


def checked_delivery(delivery: Delivery, callback_url: str | None) -> str | None:
    """The callback URL to store; push needs one (422 ``callback_url_required``)."""
    if callback_url is not None:
        callback_url = check_callback_url(callback_url)
    if delivery == "push" and callback_url is None:
        raise callback_url_required()
    return callback_url


async def create_bot(
    conn: asyncpg.Connection,
    *,
    workspace_id: int,
    username: str,
    display_name: str = "",
    delivery: Delivery = "websocket",
    callback_url: str | None = None,
    created_by: int | None = None,
) -> tuple[Bot, str, str | None]:
    """The bot, its token's secret (shown once, stored hashed) and, for push, its signing
    secret (shown once too, kept to sign). For the CLI too."""
    name = normalise_username(username)
    display_name = check_text(display_name.strip(), "display_name", max_length=MAX_DISPLAY_NAME)
    callback_url = checked_delivery(delivery, callback_url)
    async with conn.transaction():
        user = await users.insert_user(conn, name, display_name, None)
        if user is None:
            raise Conflict(f"The username {name!r} is taken.", code="username_taken")
        await workspaces.upsert_membership(conn, workspace_id, user.id, "bot")
        webhook_secret = new_webhook_secret() if delivery == "push" else None
        bot = await bots.insert_bot(
            conn, user.id, workspace_id, delivery, callback_url, created_by, webhook_secret
        )
        _, secret = await issue_api_token(conn, user.id, TOKEN_NAME, workspace_id=workspace_id)
    return bot, secret, webhook_secret


@dataclass(frozen=True, slots=True)
class BotView:
    """A bot as its admins see it: with its backlog (unacknowledged live entries)."""

    bot: Bot
    backlog: int = 0


class BotService:
    def __init__(self, pool: asyncpg.Pool, secret_overlap: float) -> None:
        self._pool = pool
        self.secret_overlap = secret_overlap

    async def create(
        self,
        identity: Identity,
        workspace_id: int,
        username: str,
        *,
        display_name: str,
        delivery: Delivery,
        callback_url: str | None,
    ) -> tuple[Bot, str, str | None]:
        async with self._pool.acquire() as conn:
            await require_manager(conn, identity, workspace_id)
            return await create_bot(
                conn,
                workspace_id=workspace_id,
                username=username,
                display_name=display_name,
                delivery=delivery,
                callback_url=callback_url,
                created_by=identity.user.id,
            )

    async def list(self, identity: Identity, workspace_id: int) -> list[BotView]:
        async with self._pool.acquire() as conn:
            await require_manager(conn, identity, workspace_id)
            found = await bots.select_workspace_bots(conn, workspace_id)
            backlogs = await bots.select_backlogs(conn, [bot.user.id for bot in found])
        return [BotView(bot, backlogs.get(bot.user.id, 0)) for bot in found]

    async def get(self, identity: Identity, bot_id: int) -> BotView:
        async with self._pool.acquire() as conn:
            bot = await self._managed_bot(conn, identity, bot_id)
            backlogs = await bots.select_backlogs(conn, [bot_id])
        return BotView(bot, backlogs.get(bot_id, 0))

    async def set_delivery(
        self,
        identity: Identity,
        bot_id: int,
        delivery: Delivery,
        callback_url: str | None,
    ) -> tuple[BotView, str | None]:
        """Sets both: push needs its callback URL in the same request, as at creation. Also
        turns a callback disabled by a 410 back on. The first push setting creates the
        signing secret, returned here only."""
        callback_url = checked_delivery(delivery, callback_url)
        async with self._pool.acquire() as conn, conn.transaction():
            await self._managed_bot(conn, identity, bot_id)
            updated = await bots.update_delivery(conn, bot_id, delivery, callback_url)
            if updated is None:
                raise NotFound(BOT_NOT_FOUND)
            secret: str | None = None
            if delivery == "push":
                secret = new_webhook_secret()
                if not await bots.set_first_secret(conn, bot_id, secret):
                    secret = None
            backlogs = await bots.select_backlogs(conn, [bot_id])
        return BotView(updated, backlogs.get(bot_id, 0)), secret

    async def rotate_secret(
        self, identity: Identity, bot_id: int
    ) -> tuple[str, dt.datetime | None]:
        """A new signing secret (returned only here); the previous one keeps signing for
        the overlap. Returns the secret and when the previous one stops."""
        secret = new_webhook_secret()
        async with self._pool.acquire() as conn, conn.transaction():
            await self._managed_bot(conn, identity, bot_id)
            previous_until = await bots.rotate_secret(conn, bot_id, secret, self.secret_overlap)
        return secret, previous_until

    async def _managed_bot(self, conn: asyncpg.Connection, identity: Identity, bot_id: int) -> Bot:
        """A bot of a workspace the caller manages; any other is not found (nor told apart)."""
        bot = await bots.select_bot(conn, bot_id)
        if bot is None:
            raise NotFound(BOT_NOT_FOUND)
        try:
            await require_manager(conn, identity, bot.workspace_id)
        except NotFound:
            raise NotFound(BOT_NOT_FOUND) from None
        return bot


BOTS = web.AppKey("bots", BotService)


async def bots_ctx(app: web.Application) -> AsyncIterator[None]:
    app[BOTS] = BotService(app[POOL], app[CONFIG].webhook_secret_overlap)
    yield
