"""A workspace's upload settings (owners and admins) and the limits every member reads before
sending a file. ``change_settings`` is the one place a change is checked, for the API and
the ``echora workspace-settings`` command alike."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg
from aiohttp import web

from echora_server.auth.access import require_manager, require_membership
from echora_server.auth.identity import Identity
from echora_server.core.errors import Conflict, InvalidRequest
from echora_server.db import policies
from echora_server.db.policies import SETTING_NAMES, Usage, WorkspaceSettings
from echora_server.db.pool import POOL
from echora_server.files.policy import UploadPolicy
from echora_server.files.uploads import UPLOADS, UploadService


def check_changes(changes: Mapping[str, Any], server_max_bytes: int) -> dict[str, Any]:
    """``changes`` as stored: known names only, sizes within the server's cap, lists as
    tuples without repeats, denied_types never null."""
    unknown = set(changes) - set(SETTING_NAMES)
    if unknown:
        raise InvalidRequest(details=[{"field": n, "problem": "unknown"} for n in sorted(unknown)])
    checked = dict(changes)
    size = checked.get("max_file_size")
    if size is not None and size > server_max_bytes:
        # 409, not 422: the value is valid, the server's configuration is what it conflicts with.
        raise Conflict(
            f"max_file_size may be at most the server's limit, {server_max_bytes} bytes.",
            code="above_server_limit",
            details={"limit_bytes": server_max_bytes},
        )
    for name in ("allowed_types", "denied_types"):
        if name in checked and checked[name] is not None:
            checked[name] = tuple(dict.fromkeys(checked[name]))
    if "denied_types" in checked and checked["denied_types"] is None:
        checked["denied_types"] = ()
    return checked


async def change_settings(
    conn: asyncpg.Connection, workspace_id: int, changes: Mapping[str, Any], server_max: int
) -> WorkspaceSettings:
    return await policies.update_settings(conn, workspace_id, check_changes(changes, server_max))


@dataclass(frozen=True, slots=True)
class Limits:
    policy: UploadPolicy
    role: str
    settings: WorkspaceSettings
    usage: Usage
    direct_available: bool  # the store takes presigned POSTs


class SettingsService:
    def __init__(self, pool: asyncpg.Pool, uploads: UploadService) -> None:
        self._pool = pool
        self._uploads = uploads

    @property
    def server_max_bytes(self) -> int:
        return self._uploads.limits.max_bytes

    async def settings(self, identity: Identity, workspace_id: int) -> WorkspaceSettings:
        async with self._pool.acquire() as conn:
            await require_manager(conn, identity, workspace_id)
            return await policies.select_settings(conn, workspace_id)

    async def change(
        self, identity: Identity, workspace_id: int, changes: Mapping[str, Any]
    ) -> WorkspaceSettings:
        async with self._pool.acquire() as conn:
            await require_manager(conn, identity, workspace_id)
            return await change_settings(conn, workspace_id, changes, self.server_max_bytes)

    async def limits(self, identity: Identity, workspace_id: int) -> Limits:
        now: dt.datetime = self._uploads.clock()
        async with self._pool.acquire() as conn:
            membership = await require_membership(conn, identity, workspace_id)
            settings = await policies.select_settings(conn, workspace_id)
            usage = await policies.select_usage(conn, workspace_id, identity.user.id, now)
        return Limits(
            self._uploads.policy(settings),
            membership.role,
            settings,
            usage,
            self._uploads.storage.direct_upload_origin is not None,
        )


SETTINGS = web.AppKey("settings", SettingsService)


async def settings_ctx(app: web.Application) -> AsyncIterator[None]:
    app[SETTINGS] = SettingsService(app[POOL], app[UPLOADS])
    yield
