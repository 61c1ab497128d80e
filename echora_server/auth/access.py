"""Access to a workspace always goes through the caller's current membership."""

from __future__ import annotations

import asyncpg

from echora_server.auth.identity import Identity
from echora_server.db import workspaces
from echora_server.db.records import MANAGER_ROLES, Membership
from echora_server.errors import Forbidden, NotFound

WORKSPACE_NOT_FOUND = "Workspace not found."


async def require_membership(
    conn: asyncpg.Connection, identity: Identity, workspace_id: int
) -> Membership:
    """The caller's membership; 404 (never 403) when there is none, so another tenant's
    workspace looks exactly like a missing one."""
    membership = None
    if identity.may_use_workspace(workspace_id):
        membership = await workspaces.select_membership(conn, workspace_id, identity.user.id)
    if membership is None:
        raise NotFound(WORKSPACE_NOT_FOUND)
    return membership


async def require_manager(
    conn: asyncpg.Connection, identity: Identity, workspace_id: int
) -> Membership:
    membership = await require_membership(conn, identity, workspace_id)
    if membership.role not in MANAGER_ROLES:
        raise Forbidden("Only workspace owners and admins can do this.")
    return membership
