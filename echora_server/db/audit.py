"""Queries of the audit log: append, count what is aggregated, read a page, prune."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg


@dataclass(frozen=True, slots=True)
class AuditRow:
    id: int
    at: dt.datetime
    workspace_id: int | None
    actor_id: int | None
    action: str
    attachment_id: str | None
    request_id: str | None
    client_addr: str | None
    details: dict[str, Any]
    count: int
    last_at: dt.datetime


def to_row(row: asyncpg.Record) -> AuditRow:
    return AuditRow(
        row["id"],
        row["at"],
        row["workspace_id"],
        row["actor_id"],
        row["action"],
        row["attachment_id"],
        row["request_id"],
        row["client_addr"],
        json.loads(row["details"]),
        row["count"],
        row["last_at"],
    )


# The context the transaction's triggers record (deletions, links); local to it.
SET_CONTEXT = """
SELECT set_config('echora.audit_actor', coalesce($1::bigint::text, ''), true),
       set_config('echora.audit_request', coalesce($2, ''), true),
       set_config('echora.audit_client', coalesce($3, ''), true),
       set_config('echora.audit_action', coalesce($4, ''), true)
"""


async def set_context(
    conn: asyncpg.Connection,
    actor_id: int | None,
    request_id: str | None,
    client_addr: str | None,
    action: str | None = None,
) -> None:
    """Inside a transaction: what its audit triggers record as actor, request and action."""
    await conn.execute(SET_CONTEXT, actor_id, request_id, client_addr, action)


INSERT_ENTRY = """
INSERT INTO audit_log
    (workspace_id, actor_id, action, attachment_id, request_id, client_addr, details)
VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)
"""


async def insert_entry(
    conn: asyncpg.Connection,
    workspace_id: int | None,
    actor_id: int | None,
    action: str,
    attachment_id: str | None,
    request_id: str | None,
    client_addr: str | None,
    details: dict[str, Any],
) -> None:
    await conn.execute(
        INSERT_ENTRY,
        workspace_id,
        actor_id,
        action,
        attachment_id,
        request_id,
        client_addr,
        json.dumps(details, separators=(",", ":")),
    )


# One row per key and hour: counts from every process add up; the newest request is kept.
ADD_COUNTS = """
INSERT INTO audit_log AS l (
    at, last_at, workspace_id, actor_id, action, attachment_id, request_id, client_addr,
    details, count, agg_key)
SELECT * FROM unnest(
    $1::timestamptz[], $2::timestamptz[], $3::bigint[], $4::bigint[], $5::text[], $6::text[],
    $7::text[], $8::text[], $9::jsonb[], $10::integer[], $11::text[])
ON CONFLICT (agg_key) DO UPDATE SET
    count = l.count + EXCLUDED.count,
    last_at = greatest(l.last_at, EXCLUDED.last_at),
    request_id = EXCLUDED.request_id
"""


@dataclass(slots=True)
class Counted:
    """One key's count in an hour (``audit.tally`` adds to it until it is written)."""

    hour: dt.datetime
    last_at: dt.datetime
    workspace_id: int | None
    actor_id: int | None
    action: str
    attachment_id: str | None
    request_id: str | None
    client_addr: str | None
    details: dict[str, Any]
    count: int
    key: str


async def add_counts(conn: asyncpg.Connection, rows: Sequence[Counted]) -> None:
    if not rows:
        return
    await conn.execute(
        ADD_COUNTS,
        [r.hour for r in rows],
        [r.last_at for r in rows],
        [r.workspace_id for r in rows],
        [r.actor_id for r in rows],
        [r.action for r in rows],
        [r.attachment_id for r in rows],
        [r.request_id for r in rows],
        [r.client_addr for r in rows],
        [json.dumps(r.details, separators=(",", ":")) for r in rows],
        [r.count for r in rows],
        [r.key for r in rows],
    )


@dataclass(frozen=True, slots=True)
class AuditFilter:
    actor_id: int | None = None
    attachment_id: str | None = None
    actions: Sequence[str] = ()
    since: dt.datetime | None = None
    until: dt.datetime | None = None


# Newest first; ``before`` is the cursor (the last id of the previous page).
SELECT_ENTRIES = """
SELECT * FROM audit_log
WHERE workspace_id IS NOT DISTINCT FROM $1
  AND ($2::bigint IS NULL OR id < $2)
  AND ($3::bigint IS NULL OR actor_id = $3)
  AND ($4::text IS NULL OR attachment_id = $4)
  AND (cardinality($5::text[]) = 0 OR action = ANY($5::text[]))
  AND ($6::timestamptz IS NULL OR last_at >= $6)
  AND ($7::timestamptz IS NULL OR at < $7)
ORDER BY id DESC
LIMIT $8
"""


async def select_entries(
    conn: asyncpg.Connection,
    workspace_id: int | None,
    where: AuditFilter,
    before: int | None,
    limit: int,
) -> list[AuditRow]:
    rows = await conn.fetch(
        SELECT_ENTRIES,
        workspace_id,
        before,
        where.actor_id,
        where.attachment_id,
        list(where.actions),
        where.since,
        where.until,
        limit,
    )
    return [to_row(row) for row in rows]


DELETE_OLDER = """
WITH doomed AS (
    SELECT id FROM audit_log WHERE last_at < $1 ORDER BY last_at LIMIT $2
)
DELETE FROM audit_log l USING doomed WHERE l.id = doomed.id
"""


async def delete_older(conn: asyncpg.Connection, before: dt.datetime, limit: int) -> int:
    status = await conn.execute(DELETE_OLDER, before, limit)
    return int(status.split()[-1])


COUNT_OLDER = "SELECT count(*) FROM audit_log WHERE last_at < $1"


async def count_older(conn: asyncpg.Connection, before: dt.datetime) -> int:
    return int(await conn.fetchval(COUNT_OLDER, before))
