"""Workspace membership: who is in a workspace, and adding and removing members."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
from aiohttp import web

from echora_server.auth.access import require_manager, require_membership
from echora_server.auth.identity import Identity
from echora_server.channels.service import MEMBER_NOT_FOUND, remove_from_workspace_channels
from echora_server.core.errors import Conflict, Forbidden, NotFound
from echora_server.db import users, workspaces
from echora_server.db.pool import POOL
from echora_server.db.records import Member, Role, User
from echora_server.realtime.bus import BUS, EventBus


class WorkspaceService:
    def __init__(self, pool: asyncpg.Pool, bus: EventBus) -> None:
        self._pool = pool
        self._bus = bus

    async def list_members(self, identity: Identity, workspace_id: int) -> list[Member]:
        async with self._pool.acquire() as conn:
            await require_membership(conn, identity, workspace_id)
            return await workspaces.select_members(conn, workspace_id)

    async def add_member(
        self, identity: Identity, workspace_id: int, username: str, role: Role
    ) -> User:
        """Owners and admins add users (only an owner adds an owner); re-adding sets the role."""
        async with self._pool.acquire() as conn:
            manager = await require_manager(conn, identity, workspace_id)
            if role == "owner" and manager.role != "owner":
                raise Forbidden("Only an owner can add another owner.")
            user = await users.select_user_by_username(conn, username.strip().lower())
            if user is None:
                raise NotFound("No user with that username.", code="user_not_found")
            await workspaces.upsert_membership(conn, workspace_id, user.id, role)
        return user

    async def remove_member(self, identity: Identity, workspace_id: int, user_id: int) -> None:
        """Anyone may leave; owners and admins remove others; the last owner stays."""
        async with self._pool.acquire() as conn, self._bus.transaction(conn) as events:
            if user_id == identity.user.id:
                caller = await require_membership(conn, identity, workspace_id)
            else:
                caller = await require_manager(conn, identity, workspace_id)
            await workspaces.lock_workspace(conn, workspace_id)  # serialises the owner check
            target = await workspaces.select_membership(conn, workspace_id, user_id)
            if target is None:
                raise NotFound(MEMBER_NOT_FOUND)
            if target.role == "owner" and caller.role != "owner":
                raise Forbidden("Only an owner can remove an owner.")
            if target.role == "owner" and await workspaces.count_owners(conn, workspace_id) <= 1:
                raise Conflict("A workspace must keep at least one owner.", code="last_owner")
            events += await remove_from_workspace_channels(conn, workspace_id, user_id)
            await workspaces.delete_membership(conn, workspace_id, user_id)


WORKSPACES = web.AppKey("workspaces", WorkspaceService)


async def workspaces_ctx(app: web.Application) -> AsyncIterator[None]:
    app[WORKSPACES] = WorkspaceService(app[POOL], app[BUS])
    yield
