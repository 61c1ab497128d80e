"""Recording: each call writes in the caller's connection (its transaction, when it has one),
so a write that rolls back leaves no record of itself. The request's id and client address
come from the context the web layer binds for each request."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass
from typing import Any

import asyncpg

from echora_server.db import audit

# Actions, as the log stores them (the migration lists the same).
TICKET_CREATED = "ticket.created"
UPLOAD_RECEIVED = "upload.received"
UPLOAD_FINALIZED = "upload.finalized"
UPLOAD_REFUSED = "upload.refused"
FILE_UPLOADED = "file.uploaded"
FILE_ATTACHED = "file.attached"
FILE_DOWNLOADED = "file.downloaded"
FILE_DELETED = "file.deleted"
TICKET_EXPIRED = "ticket.expired"
FILE_SWEPT = "file.swept"
TOKEN_REFUSED = "token.refused"  # noqa: S105 (an action name)
ACTIONS = (
    TICKET_CREATED,
    UPLOAD_RECEIVED,
    UPLOAD_FINALIZED,
    UPLOAD_REFUSED,
    FILE_UPLOADED,
    FILE_ATTACHED,
    FILE_DOWNLOADED,
    FILE_DELETED,
    TICKET_EXPIRED,
    FILE_SWEPT,
    TOKEN_REFUSED,
)


@dataclass(frozen=True, slots=True)
class Origin:
    request_id: str | None = None
    client_addr: str | None = None


_NO_ORIGIN = Origin()
_ORIGIN: contextvars.ContextVar[Origin | None] = contextvars.ContextVar(
    "audit_origin", default=None
)


def bind_origin(request_id: str, client_addr: str | None) -> None:
    """Per request (each runs in its own task, so its own context)."""
    _ORIGIN.set(Origin(request_id, client_addr[:64] if client_addr else None))


def origin() -> Origin:
    return _ORIGIN.get() or _NO_ORIGIN


async def record(
    conn: asyncpg.Connection,
    action: str,
    *,
    workspace_id: int | None,
    actor_id: int | None,
    attachment_id: str | None = None,
    **details: Any,
) -> None:
    here = origin()
    await audit.insert_entry(
        conn,
        workspace_id,
        actor_id,
        action,
        attachment_id,
        here.request_id,
        here.client_addr,
        details,
    )


async def attribute(
    conn: asyncpg.Connection, actor_id: int | None, action: str | None = None
) -> None:
    """Inside a transaction: who its audit triggers name (deletions, links), and the action
    a deletion records (``file.deleted`` unless given, e.g. ``file.swept``)."""
    here = origin()
    await audit.set_context(conn, actor_id, here.request_id, here.client_addr, action)
