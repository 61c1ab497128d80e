"""Upload tickets (sql/0007): created under the owner's open-ticket limit, held by one PUT or
one finalize at a time, finalized together with their attachment row. Times come from the
caller's clock (tests fix it), never the database's."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

import asyncpg

from echora_server.db.policies import (
    SETTINGS_COLUMNS,
    QuotaRefusal,
    WorkspaceSettings,
    to_refusal,
    to_settings,
)

# put: through Echora; post: a form to the store; store_put: a presigned PUT to the store
Method = Literal["put", "post", "store_put"]


@dataclass(frozen=True, slots=True)
class NewTicket:
    id: str
    token_hash: bytes
    workspace_id: int
    owner_id: int
    channel_id: int | None
    storage_key: str
    filename: str
    declared_type: str
    size: int
    method: Method
    created_at: dt.datetime
    expires_at: dt.datetime
    finalize_before: dt.datetime
    declared_sha256: bytes | None = None  # what the client said the bytes hash to


@dataclass(frozen=True, slots=True)
class Ticket:
    id: str
    workspace_id: int
    owner_id: int
    channel_id: int | None
    storage_key: str
    filename: str
    declared_type: str
    size: int
    method: Method
    created_at: dt.datetime
    expires_at: dt.datetime
    finalize_before: dt.datetime
    received_at: dt.datetime | None
    sha256: bytes | None
    detected_type: str | None
    width: int | None
    height: int | None
    finalized_at: dt.datetime | None
    attachment_id: str | None
    declared_sha256: bytes | None


_TICKET = """
t.id, t.workspace_id, t.owner_id, t.channel_id, t.storage_key, t.filename, t.declared_type,
t.size, t.method, t.created_at, t.expires_at, t.finalize_before, t.received_at, t.sha256,
t.detected_type, t.width, t.height, t.finalized_at, t.attachment_id, t.declared_sha256
"""


_TICKET_FIELDS = tuple(part.strip().removeprefix("t.") for part in _TICKET.split(","))


def _ticket(row: asyncpg.Record) -> Ticket:
    values = {name: row[name] for name in _TICKET_FIELDS}
    for name in ("sha256", "declared_sha256"):
        if values[name] is not None:
            values[name] = bytes(values[name])
    return Ticket(**values)


@dataclass(frozen=True, slots=True)
class OpenTickets:
    count: int
    # When the oldest open ticket stops counting (its finalize_before), for Retry-After.
    first_frees_at: dt.datetime | None
    refusal: QuotaRefusal | None = None  # a quota had no room for the declared size
    inserted: bool = False


# In READ COMMITTED a statement's snapshot predates any lock it waits for: the owner's row is
# locked by a statement of its own, so the count that follows sees every ticket committed
# before the lock was granted, and concurrent requests count one after another.
LOCK_OWNER = "SELECT id FROM users WHERE id = $1 FOR UPDATE"

# An open ticket is unfinalized and still finalizable. Its declared size is reserved against
# the quotas (``quota_refusal``, sql/0009) in this same statement, under the quota's lock.
INSERT_TICKET = """
WITH open AS (
    SELECT count(*) AS n, min(finalize_before) AS first_frees_at
    FROM upload_tickets
    WHERE owner_id = $2 AND finalized_at IS NULL AND finalize_before > $11
), q AS MATERIALIZED (
    SELECT CASE WHEN (SELECT n FROM open) < $14
                THEN quota_refusal($4, $2, $9, $11)::text END AS refusal
), t AS (
    INSERT INTO upload_tickets (
        id, owner_id, token_hash, workspace_id, channel_id, storage_key, filename,
        declared_type, size, method, created_at, expires_at, finalize_before, declared_sha256)
    SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $15
    FROM open, q
    WHERE open.n < $14 AND q.refusal IS NULL
    RETURNING id
)
SELECT open.n, open.first_frees_at, q.refusal, (SELECT count(*) FROM t) AS inserted
FROM open, q
"""


async def insert_ticket(conn: asyncpg.Connection, ticket: NewTicket, max_open: int) -> OpenTickets:
    """Insert unless the owner has ``max_open`` open tickets or a quota has no room. The open
    count before, when the first of them frees a place, and any quota's refusal."""
    async with conn.transaction():
        await conn.execute(LOCK_OWNER, ticket.owner_id)
        row = await conn.fetchrow(
            INSERT_TICKET,
            ticket.id,
            ticket.owner_id,
            ticket.token_hash,
            ticket.workspace_id,
            ticket.channel_id,
            ticket.storage_key,
            ticket.filename,
            ticket.declared_type,
            ticket.size,
            ticket.method,
            ticket.created_at,
            ticket.expires_at,
            ticket.finalize_before,
            max_open,
            ticket.declared_sha256,
        )
    if row is None:
        raise RuntimeError("INSERT_TICKET yields one row")
    return OpenTickets(
        row["n"], row["first_frees_at"], to_refusal(row["refusal"]), row["inserted"] == 1
    )


SELECT_TICKET = f"""
SELECT {_TICKET} FROM upload_tickets t WHERE t.id = $1 AND t.token_hash = $2
"""


SELECT_TICKET_BY_ID = f"SELECT {_TICKET} FROM upload_tickets t WHERE t.id = $1"


async def select_ticket_by_id(conn: asyncpg.Connection, ticket_id: str) -> Ticket | None:
    """For a caller that proved the token already (a finalize's hold)."""
    row = await conn.fetchrow(SELECT_TICKET_BY_ID, ticket_id)
    return _ticket(row) if row is not None else None


async def select_ticket(
    conn: asyncpg.Connection, ticket_id: str, token_hash: bytes
) -> Ticket | None:
    """The ticket ``ticket_id`` if ``token_hash`` is its token's: a wrong token finds nothing."""
    row = await conn.fetchrow(SELECT_TICKET, ticket_id, token_hash)
    return _ticket(row) if row is not None else None


# A PUT may start while the ticket is unexpired, unfinalized, not yet received and not held
# by another PUT; it holds the ticket until ``$3`` (its longest possible duration).
# A hold also reads the workspace's upload settings: the policy costs no round trip.
HOLD_FOR_SENDING = f"""
WITH t AS (
    UPDATE upload_tickets t SET sending_until = $4
    WHERE t.id = $1 AND t.token_hash = $2 AND t.expires_at > $3 AND t.method = 'put'
      AND t.finalized_at IS NULL AND t.received_at IS NULL
      AND (t.sending_until IS NULL OR t.sending_until <= $3)
    RETURNING t.*
)
SELECT {_TICKET}, {SETTINGS_COLUMNS}
FROM t LEFT JOIN workspace_settings s ON s.workspace_id = t.workspace_id
"""


async def hold_for_sending(
    conn: asyncpg.Connection,
    ticket_id: str,
    token_hash: bytes,
    now: dt.datetime,
    until: dt.datetime,
) -> tuple[Ticket, WorkspaceSettings] | None:
    """The ticket, held for a PUT until ``until``, and its workspace's settings."""
    row = await conn.fetchrow(HOLD_FOR_SENDING, ticket_id, token_hash, now, until)
    return (_ticket(row), to_settings(row)) if row is not None else None


RELEASE_SENDING = "UPDATE upload_tickets SET sending_until = NULL WHERE id = $1"


async def release_sending(conn: asyncpg.Connection, ticket_id: str) -> None:
    """After a PUT that stored nothing: another may try while the ticket lives."""
    await conn.execute(RELEASE_SENDING, ticket_id)


MARK_RECEIVED = """
UPDATE upload_tickets
SET received_at = $2, sha256 = $3, detected_type = $4, width = $5, height = $6,
    sending_until = NULL
WHERE id = $1 AND finalized_at IS NULL
"""


@dataclass(frozen=True, slots=True)
class Received:
    sha256: bytes
    detected_type: str | None
    width: int | None
    height: int | None


async def mark_received(
    conn: asyncpg.Connection, ticket_id: str, now: dt.datetime, received: Received
) -> bool:
    """False when the ticket is gone (swept or deleted with its channel) or finalized."""
    status: str = await conn.execute(
        MARK_RECEIVED,
        ticket_id,
        now,
        received.sha256,
        received.detected_type,
        received.width,
        received.height,
    )
    return status == "UPDATE 1"


HOLD_FOR_FINALIZE = f"""
WITH t AS (
    UPDATE upload_tickets t SET finalizing_until = $5
    WHERE t.id = $1 AND t.token_hash = $2 AND t.owner_id = $3
      AND t.finalized_at IS NULL AND t.finalize_before > $4
      AND (t.sending_until IS NULL OR t.sending_until <= $4)
      AND (t.finalizing_until IS NULL OR t.finalizing_until <= $4)
    RETURNING t.*
)
SELECT {_TICKET}, {SETTINGS_COLUMNS}
FROM t LEFT JOIN workspace_settings s ON s.workspace_id = t.workspace_id
"""


async def hold_for_finalize(
    conn: asyncpg.Connection,
    ticket_id: str,
    token_hash: bytes,
    owner_id: int,
    now: dt.datetime,
    until: dt.datetime,
) -> tuple[Ticket, WorkspaceSettings] | None:
    """The ticket, held for a finalize until ``until``, and its workspace's settings."""
    row = await conn.fetchrow(HOLD_FOR_FINALIZE, ticket_id, token_hash, owner_id, now, until)
    return (_ticket(row), to_settings(row)) if row is not None else None


RELEASE_FINALIZE = "UPDATE upload_tickets SET finalizing_until = NULL WHERE id = $1"


async def release_finalize(conn: asyncpg.Connection, ticket_id: str) -> None:
    await conn.execute(RELEASE_FINALIZE, ticket_id)


DELETE_TICKET = "DELETE FROM upload_tickets WHERE id = $1 AND finalized_at IS NULL"


async def delete_ticket(conn: asyncpg.Connection, ticket_id: str) -> bool:
    """A refused ticket: its trigger queues the object, deleted by the caller or the sweep."""
    status: str = await conn.execute(DELETE_TICKET, ticket_id)
    return status == "DELETE 1"


# Past finalize_before a ticket is dead: unfinalized ones take their object along (trigger),
# finalized ones leave it to their attachment. The sweep's ``now`` makes the queued objects due.
DELETE_DEAD_TICKETS = """
WITH doomed AS (
    SELECT id FROM upload_tickets
    WHERE finalize_before <= $1
    ORDER BY finalize_before
    LIMIT $2
    FOR UPDATE SKIP LOCKED
), gone AS (
    DELETE FROM upload_tickets t USING doomed WHERE t.id = doomed.id
    RETURNING t.id, t.workspace_id, t.owner_id, t.filename, t.size, t.received_at,
              t.storage_key, t.finalized_at
), logged AS (
    INSERT INTO audit_log (workspace_id, actor_id, action, attachment_id, details)
    SELECT workspace_id, owner_id, 'ticket.expired', id,
           jsonb_build_object('filename', filename, 'size', size,
                              'bytes_received', received_at IS NOT NULL)
    FROM gone WHERE finalized_at IS NULL
)
SELECT storage_key, finalized_at IS NULL AS unfinalized FROM gone
"""

MAKE_DUE = """
UPDATE storage_deletions SET not_before = $2
WHERE key = ANY($1::text[]) AND attempts = 0 AND not_before > $2
"""


@dataclass(frozen=True, slots=True)
class SweptTickets:
    finalized: int
    unfinalized: int


async def delete_dead_tickets(
    conn: asyncpg.Connection, now: dt.datetime, limit: int
) -> SweptTickets:
    async with conn.transaction():
        rows = await conn.fetch(DELETE_DEAD_TICKETS, now, limit)
        keys = [r["storage_key"] for r in rows if r["unfinalized"]]
        if keys:
            await conn.execute(MAKE_DUE, keys, now)
    return SweptTickets(len(rows) - len(keys), len(keys))


COUNT_DEAD_TICKETS = """
SELECT count(*) FROM upload_tickets WHERE finalize_before <= $1 AND finalized_at IS NULL
"""


async def count_dead_tickets(conn: asyncpg.Connection, now: dt.datetime) -> int:
    """Unfinalized tickets a sweep at ``now`` would delete (for a dry run)."""
    return int(await conn.fetchval(COUNT_DEAD_TICKETS, now))
