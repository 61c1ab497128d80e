"""Access to a workspace always goes through the caller's current membership."""

from __future__ import annotations

import asyncpg

from echora_server.auth.identity import Identity
from echora_server.core.errors import Forbidden, NotFound
from echora_server.db import channels, workspaces
from echora_server.db.records import MANAGER_ROLES, ChannelAccess, Membership

WORKSPACE_NOT_FOUND = "Workspace not found."
CHANNEL_NOT_FOUND = "Channel not found."


async def require_membership(
    conn: asyncpg.Connection, identity: Identity, workspace_id: int
) -> Membership:
    """The caller's membership, else 404 (not 403): another tenant's workspace looks missing."""
    membership = None
    if identity.may_use_workspace(workspace_id):
        membership = await workspaces.select_membership(conn, workspace_id, identity.user.id)
    return membership_or_404(identity, membership)


def membership_or_404(identity: Identity, membership: Membership | None) -> Membership:
    """The rule of ``require_membership`` for a membership read by another query."""
    if membership is None or not identity.may_use_workspace(membership.workspace.id):
        raise NotFound(WORKSPACE_NOT_FOUND)
    return membership


async def require_manager(
    conn: asyncpg.Connection, identity: Identity, workspace_id: int
) -> Membership:
    membership = await require_membership(conn, identity, workspace_id)
    if membership.role not in MANAGER_ROLES:
        raise Forbidden("Only workspace owners and admins can do this.")
    return membership


async def require_channel(
    conn: asyncpg.Connection, identity: Identity, channel_id: int
) -> ChannelAccess:
    """The channel and the caller's standing, read fresh. 404, like a missing channel, when
    its workspace is out of the caller's (or token's) reach, or it is private and not theirs."""
    access = await channels.select_channel_access(conn, channel_id, identity.user.id)
    return channel_or_404(identity, access)


def channel_or_404(identity: Identity, access: ChannelAccess | None) -> ChannelAccess:
    """The rule of ``require_channel`` for a channel read by another query."""
    if (
        access is None
        or not identity.may_use_workspace(access.channel.workspace_id)
        or (access.channel.private and not access.joined)
    ):
        raise NotFound(CHANNEL_NOT_FOUND)
    return access
