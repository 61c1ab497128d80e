"""``/api/workspaces/{id}/settings`` (owners and admins) and ``/limits`` (every member)."""

from __future__ import annotations

from aiohttp import web

from echora_server.auth.access import WORKSPACE_NOT_FOUND
from echora_server.auth.identity import require_identity
from echora_server.core.route import Route
from echora_server.core.validation import path_id, read_json
from echora_server.workspaces.settings import SETTINGS
from echora_server.workspaces.settings_shapes import (
    ChangeSettings,
    LimitsShape,
    Settings,
    limits_json,
    settings_json,
)


async def get_settings(request: web.Request) -> web.Response:
    identity = await require_identity(request)
    workspace_id = path_id(request, "workspace_id", WORKSPACE_NOT_FOUND)
    service = request.app[SETTINGS]
    settings = await service.settings(identity, workspace_id)
    return web.json_response(settings_json(settings, service.server_max_bytes))


async def change_settings(request: web.Request) -> web.Response:
    identity = await require_identity(request)
    workspace_id = path_id(request, "workspace_id", WORKSPACE_NOT_FOUND)
    body = await read_json(request, ChangeSettings)
    changes = {name: getattr(body, name) for name in body.model_fields_set}
    service = request.app[SETTINGS]
    settings = await service.change(identity, workspace_id, changes)
    return web.json_response(settings_json(settings, service.server_max_bytes))


async def get_limits(request: web.Request) -> web.Response:
    identity = await require_identity(request)
    workspace_id = path_id(request, "workspace_id", WORKSPACE_NOT_FOUND)
    limits = await request.app[SETTINGS].limits(identity, workspace_id)
    return web.json_response(limits_json(limits))


ROUTES: tuple[Route, ...] = (
    Route(
        "GET",
        "/api/workspaces/{workspace_id}/settings",
        get_settings,
        "A workspace's upload policy and quotas (owners and admins)",
        "workspaces",
        responses={200: "OK", 403: "Not an owner or admin", 404: "Not a member"},
        schemas={200: Settings},
    ),
    Route(
        "PATCH",
        "/api/workspaces/{workspace_id}/settings",
        change_settings,
        "Change a workspace's upload policy and quotas (owners and admins)",
        "workspaces",
        body=ChangeSettings,
        responses={
            200: "The settings now",
            403: "Not an owner or admin",
            404: "Not a member",
            409: "max_file_size above the server's limit (details.limit_bytes)",
            422: "Invalid settings",
        },
        schemas={200: Settings},
    ),
    Route(
        "GET",
        "/api/workspaces/{workspace_id}/limits",
        get_limits,
        "What this workspace accepts from me, and my usage and quota (any member)",
        "workspaces",
        responses={200: "OK", 404: "Not a member"},
        schemas={200: LimitsShape},
    ),
)
