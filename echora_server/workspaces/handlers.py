"""Workspace members over REST (the rules: ``workspaces.service``)."""

from __future__ import annotations

from aiohttp import web
from pydantic import Field

from echora_server.accounts.service import USERNAME_PATTERN
from echora_server.accounts.shapes import User, user_json
from echora_server.auth.access import WORKSPACE_NOT_FOUND
from echora_server.auth.identity import require_identity
from echora_server.channels.service import MEMBER_NOT_FOUND
from echora_server.core.route import Route
from echora_server.core.shapes import Shape
from echora_server.core.validation import Body, path_id, read_json
from echora_server.db.records import Role
from echora_server.workspaces.service import WORKSPACES
from echora_server.workspaces.shapes import WorkspaceMember, member_json


class AddMemberBody(Body):
    username: str = Field(
        min_length=1, max_length=64, json_schema_extra={"pattern": USERNAME_PATTERN}
    )
    role: Role = "member"


class Members(Shape):
    members: list[WorkspaceMember]


class AddedMember(User):
    role: Role


async def list_members(request: web.Request) -> web.Response:
    identity = await require_identity(request)
    workspace_id = path_id(request, "workspace_id", WORKSPACE_NOT_FOUND)
    members = await request.app[WORKSPACES].list_members(identity, workspace_id)
    return web.json_response({"members": [member_json(m) for m in members]})


async def add_member(request: web.Request) -> web.Response:
    identity = await require_identity(request)
    workspace_id = path_id(request, "workspace_id", WORKSPACE_NOT_FOUND)
    body = await read_json(request, AddMemberBody)
    user = await request.app[WORKSPACES].add_member(
        identity, workspace_id, body.username, body.role
    )
    return web.json_response({**user_json(user), "role": body.role}, status=201)


async def remove_member(request: web.Request) -> web.Response:
    identity = await require_identity(request)
    workspace_id = path_id(request, "workspace_id", WORKSPACE_NOT_FOUND)
    user_id = path_id(request, "user_id", MEMBER_NOT_FOUND)
    await request.app[WORKSPACES].remove_member(identity, workspace_id, user_id)
    return web.Response(status=204)


ROUTES: tuple[Route, ...] = (
    Route(
        "GET",
        "/api/workspaces/{workspace_id}/members",
        list_members,
        "List a workspace's members",
        "workspaces",
        responses={200: "OK", 404: "Not a member"},
        schemas={200: Members},
    ),
    Route(
        "POST",
        "/api/workspaces/{workspace_id}/members",
        add_member,
        "Add a user to a workspace (owners and admins)",
        "workspaces",
        body=AddMemberBody,
        responses={201: "Added", 403: "Not an owner or admin", 404: "No such workspace or user"},
        schemas={201: AddedMember},
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
