"""Who am I, and workspace membership management."""

from __future__ import annotations

from aiohttp import web
from pydantic import Field

from echora_server.accounts.shapes import membership_json, user_json
from echora_server.auth.access import require_manager, require_membership
from echora_server.auth.identity import require_identity
from echora_server.channels import service as channels
from echora_server.core.errors import Conflict, Forbidden, NotFound
from echora_server.core.route import Route
from echora_server.core.validation import Body, path_id, read_json
from echora_server.db import users, workspaces
from echora_server.db.records import Role
from echora_server.keys import POOL
from echora_server.realtime.events import transaction
from echora_server.workspaces.shapes import member_json


class AddMemberBody(Body):
    username: str = Field(min_length=1, max_length=64)
    role: Role = "member"


async def get_me(request: web.Request) -> web.Response:
    identity = await require_identity(request)
    async with request.app[POOL].acquire() as conn:
        memberships = await workspaces.select_memberships_of_user(conn, identity.user.id)
    visible = [m for m in memberships if identity.may_use_workspace(m.workspace.id)]
    return web.json_response(
        {
            "user": user_json(identity.user),
            "auth": identity.via,
            "workspaces": [membership_json(m) for m in visible],
        }
    )


async def list_members(request: web.Request) -> web.Response:
    identity = await require_identity(request)
    workspace_id = path_id(request, "workspace_id", "Workspace not found.")
    async with request.app[POOL].acquire() as conn:
        await require_membership(conn, identity, workspace_id)
        members = await workspaces.select_members(conn, workspace_id)
    return web.json_response({"members": [member_json(m) for m in members]})


async def add_member(request: web.Request) -> web.Response:
    identity = await require_identity(request)
    workspace_id = path_id(request, "workspace_id", "Workspace not found.")
    body = await read_json(request, AddMemberBody)
    async with request.app[POOL].acquire() as conn:
        manager = await require_manager(conn, identity, workspace_id)
        if body.role == "owner" and manager.role != "owner":
            raise Forbidden("Only an owner can add another owner.")
        user = await users.select_user_by_username(conn, body.username.strip().lower())
        if user is None:
            raise NotFound("No user with that username.", code="user_not_found")
        await workspaces.upsert_membership(conn, workspace_id, user.id, body.role)
    return web.json_response({**user_json(user), "role": body.role}, status=201)


async def remove_member(request: web.Request) -> web.Response:
    identity = await require_identity(request)
    workspace_id = path_id(request, "workspace_id", "Workspace not found.")
    user_id = path_id(request, "user_id", "Member not found.")
    async with request.app[POOL].acquire() as conn, transaction(request.app, conn) as events:
        if user_id == identity.user.id:
            caller = await require_membership(conn, identity, workspace_id)  # may always leave
        else:
            caller = await require_manager(conn, identity, workspace_id)
        await workspaces.lock_workspace(conn, workspace_id)  # serialises the last-owner check
        target = await workspaces.select_membership(conn, workspace_id, user_id)
        if target is None:
            raise NotFound("Member not found.")
        if target.role == "owner" and caller.role != "owner":
            raise Forbidden("Only an owner can remove an owner.")
        if target.role == "owner" and await workspaces.count_owners(conn, workspace_id) <= 1:
            raise Conflict("A workspace must keep at least one owner.", code="last_owner")
        # Their channel memberships go in this transaction, and the events with it.
        events += await channels.remove_from_workspace_channels(conn, workspace_id, user_id)
        await workspaces.delete_membership(conn, workspace_id, user_id)
    return web.Response(status=204)


ROUTES: tuple[Route, ...] = (
    Route("GET", "/api/me", get_me, "Who am I, and my workspaces", "workspaces"),
    Route(
        "GET",
        "/api/workspaces/{workspace_id}/members",
        list_members,
        "List a workspace's members",
        "workspaces",
        responses={200: "OK", 404: "Not a member"},
    ),
    Route(
        "POST",
        "/api/workspaces/{workspace_id}/members",
        add_member,
        "Add a user to a workspace (owners and admins)",
        "workspaces",
        body=AddMemberBody,
        responses={201: "Added", 403: "Not an owner or admin", 404: "No such workspace or user"},
    ),
    Route(
        "DELETE",
        "/api/workspaces/{workspace_id}/members/{user_id}",
        remove_member,
        "Remove a member (owners and admins; anyone may leave)",
        "workspaces",
        responses={204: "Removed", 403: "Not allowed", 404: "No such member", 409: "Last owner"},
    ),
)
