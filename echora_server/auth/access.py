"""Access to a workspace always goes through the caller's current membership."""

from __future__ import annotations

import asyncpg

from echora_server.auth.identity import Identity
from echora_server.core.errors import Forbidden, InvalidRequest, NotFound
from echora_server.db import channels, workspaces
from echora_server.db.records import MANAGER_ROLES, ChannelAccess, Membership, User

WORKSPACE_NOT_FOUND = "Workspace not found."
CHANNEL_NOT_FOUND = "Channel not found."
USER_NOT_FOUND = "No such member of this workspace."
CHANNEL_ARCHIVED = "channel_archived"
# A direct message is a conversation of this many people, the caller included.
MIN_DIRECT_MEMBERS = 2
MAX_DIRECT_MEMBERS = 8


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


async def require_writable_channel(
    conn: asyncpg.Connection, identity: Identity, channel_id: int
) -> ChannelAccess:
    """``require_channel`` for a write into the channel (a message posted, edited or deleted,
    a member joining or added),
    in the caller's transaction: the channel's row is held until it ends, so an archive or
    delete under way is waited for and seen, and one that comes later waits for this write."""
    access = await channels.select_channel_access(conn, channel_id, identity.user.id, "share")
    access = channel_or_404(identity, access)
    refuse_archived(access)
    return access


def refuse_archived(access: ChannelAccess) -> None:
    """An archived channel is read-only until it is unarchived."""
    if access.channel.archived:
        raise Forbidden("This channel is archived: it is read-only.", code=CHANNEL_ARCHIVED)


def channel_or_404(identity: Identity, access: ChannelAccess | None) -> ChannelAccess:
    """The rule of ``require_channel`` for a channel read by another query."""
    if (
        access is None
        or not identity.may_use_workspace(access.channel.workspace_id)
        or (access.channel.private and not access.joined)
    ):
        raise NotFound(CHANNEL_NOT_FOUND)
    return access


def refuse_direct(access: ChannelAccess) -> None:
    """A direct message's members are the set it was opened for: no one joins it, is added to
    it, leaves it or is removed from it through the channel routes (the database refuses
    anyone outside the set too)."""
    if access.channel.direct:
        raise Forbidden(
            "A direct message's members are fixed when it is opened.", code="direct_message"
        )


def user_not_found() -> NotFound:
    return NotFound(USER_NOT_FOUND, code="user_not_found")


async def require_direct_members(
    conn: asyncpg.Connection, identity: Identity, workspace_id: int, user_ids: list[int]
) -> list[User]:
    """The members of a direct message the caller opens with ``user_ids`` (the caller always
    among them), by id: current members of the workspace, 2 to 8 of them. A user of another
    workspace, or none, answers the same 404."""
    await require_membership(conn, identity, workspace_id)
    wanted = sorted({identity.user.id, *user_ids})
    if not MIN_DIRECT_MEMBERS <= len(wanted) <= MAX_DIRECT_MEMBERS:
        raise InvalidRequest(
            f"A direct message has {MIN_DIRECT_MEMBERS} to {MAX_DIRECT_MEMBERS} members, "
            "you included.",
            code="direct_message_size",
            details={"min": MIN_DIRECT_MEMBERS, "max": MAX_DIRECT_MEMBERS, "got": len(wanted)},
        )
    found = await channels.select_workspace_users(conn, workspace_id, wanted)
    if [user.id for user in found] != wanted:
        raise user_not_found()
    return found
