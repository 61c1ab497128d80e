"""Reading the audit log: workspace owners and admins, newest first, filtered, by cursor."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal, get_args

import asyncpg
from aiohttp import web
from pydantic import Field

from echora_server.audit.record import ACTIONS
from echora_server.auth.access import WORKSPACE_NOT_FOUND, require_manager
from echora_server.auth.identity import Identity, require_identity
from echora_server.core.route import Route
from echora_server.core.shapes import Shape
from echora_server.core.validation import MAX_ID, Query, path_id, read_query
from echora_server.db import audit
from echora_server.db.audit import AuditFilter, AuditRow
from echora_server.db.pool import POOL

MAX_PAGE = 200
Action = Literal[
    "ticket.created",
    "upload.received",
    "upload.finalized",
    "upload.refused",
    "file.uploaded",
    "file.attached",
    "file.downloaded",
    "file.deleted",
    "ticket.expired",
    "file.swept",
    "token.refused",
]
if set(get_args(Action)) != set(ACTIONS):  # one list of actions, stated twice for typing
    raise RuntimeError("audit actions differ")


class AuditQuery(Query):
    actor_id: int | None = Field(None, ge=1, le=MAX_ID, description="Who acted.")
    attachment_id: str | None = Field(
        None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$", description="The file."
    )
    action: Action | None = Field(None, description="One action.")
    since: dt.datetime | None = Field(None, description="Records at or after this time.")
    until: dt.datetime | None = Field(None, description="Records before this time.")
    before: int | None = Field(
        None, ge=1, le=MAX_ID, description="Cursor: the next_before of the previous page."
    )
    limit: int = Field(50, ge=1, le=MAX_PAGE)


class AuditEntry(Shape):
    id: int
    at: dt.datetime = Field(description="When it happened (an hourly tally: its first count).")
    action: Action
    workspace_id: int | None
    actor_id: int | None = Field(description="The user or bot; null for the server's sweeps.")
    attachment_id: str | None = Field(description="The file, or the upload ticket's id.")
    request_id: str | None
    client_addr: str | None
    details: dict[str, Any] = Field(description="Sizes, names, reasons; never a secret.")
    count: int = Field(description="How many times, for a tally (downloads, refused tokens).")
    last_at: dt.datetime = Field(description="The last count of a tally; else as at.")


class AuditPage(Shape):
    entries: list[AuditEntry]
    next_before: int | None = Field(description="Pass as before for older records; null: none.")


def entry_json(row: AuditRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "at": row.at.isoformat(),
        "action": row.action,
        "workspace_id": row.workspace_id,
        "actor_id": row.actor_id,
        "attachment_id": row.attachment_id,
        "request_id": row.request_id,
        "client_addr": row.client_addr,
        "details": row.details,
        "count": row.count,
        "last_at": row.last_at.isoformat(),
    }


async def read_audit(
    pool: asyncpg.Pool, identity: Identity, workspace_id: int, query: AuditQuery
) -> tuple[list[AuditRow], int | None]:
    where = AuditFilter(
        query.actor_id,
        query.attachment_id,
        (query.action,) if query.action else (),
        query.since,
        query.until,
    )
    async with pool.acquire() as conn:
        await require_manager(conn, identity, workspace_id)
        rows = await audit.select_entries(conn, workspace_id, where, query.before, query.limit + 1)
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    return rows, rows[-1].id if more else None


async def list_audit(request: web.Request) -> web.Response:
    identity = await require_identity(request)
    workspace_id = path_id(request, "workspace_id", WORKSPACE_NOT_FOUND)
    query = read_query(request, AuditQuery)
    rows, next_before = await read_audit(request.app[POOL], identity, workspace_id, query)
    return web.json_response(
        {"entries": [entry_json(row) for row in rows], "next_before": next_before}
    )


ROUTES: tuple[Route, ...] = (
    Route(
        "GET",
        "/api/workspaces/{workspace_id}/audit",
        list_audit,
        "Read the workspace's audit log (owners and admins): newest first, by cursor",
        "workspaces",
        query=AuditQuery,
        responses={
            200: "A page of records",
            403: "Not an owner or admin of the workspace",
            404: "No such workspace of mine",
            422: "Invalid query",
        },
        schemas={200: AuditPage},
    ),
)
