"""Attachments: a row is inserted after its objects are stored; deleting it queues them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from echora_server.db.policies import QuotaRefusal, to_refusal
from echora_server.db.records import Attachment


@dataclass(frozen=True, slots=True)
class NewAttachment:
    id: str
    storage_key: str
    filename: str
    size: int
    declared_type: str
    detected_type: str | None
    sha256: bytes
    width: int | None
    height: int | None
    thumbnail_key: str | None


_ATTACHMENT = """
a.id, a.workspace_id, a.uploader_id, a.channel_id, a.message_id, a.storage_key, a.filename,
a.size, a.declared_type, a.detected_type, a.sha256, a.width, a.height, a.thumbnail_key,
a.created_at, a.linked_at
"""


def to_attachment(row: asyncpg.Record) -> Attachment:
    return Attachment(
        id=row["id"],
        workspace_id=row["workspace_id"],
        uploader_id=row["uploader_id"],
        channel_id=row["channel_id"],
        message_id=row["message_id"],
        storage_key=row["storage_key"],
        filename=row["filename"],
        size=row["size"],
        declared_type=row["declared_type"],
        detected_type=row["detected_type"],
        sha256=bytes(row["sha256"]),
        width=row["width"],
        height=row["height"],
        thumbnail_key=row["thumbnail_key"],
        created_at=row["created_at"],
        linked_at=row["linked_at"],
    )


# One statement per upload. Membership is re-read (the upload was authorised before its bytes
# arrived) and locked FOR KEY SHARE, so a concurrent removal either commits first or waits.
# A channel-scoped upload also needs the uploader still in the channel. ``quota_refusal``
# (sql/0009) checks the workspace's quotas first, under its lock, inside this statement: a
# quota costs no round trip. One row per file inserted, or one row (id NULL) saying why none.
# Tickets' files ($15) skip the quota (their reservation holds the bytes) and are marked
# finalized here: the ticket and its attachment both or neither, with no transaction.
INSERT_ATTACHMENTS = f"""
WITH q AS MATERIALIZED (
    SELECT CASE WHEN NOT $15::boolean THEN quota_refusal(
        $1, $2, (SELECT coalesce(sum(n), 0) FROM unnest($7::bigint[]) n)::bigint, $14
    )::text END AS refusal
), ch AS (
    -- The channel first, as every writer takes it (db.channels._LOCKS): a delete under way
    -- is waited for, then leaves nothing to insert into (404), never a deadlock with the
    -- ticket's row below nor a foreign-key error.
    SELECT c.id FROM channels c WHERE c.id = $3 FOR KEY SHARE
), allowed AS (
    SELECT m.workspace_id, m.user_id
    FROM memberships m
    WHERE m.workspace_id = $1 AND m.user_id = $2
      AND (SELECT q.refusal FROM q) IS NULL
      AND ($3::bigint IS NULL OR EXISTS (SELECT 1 FROM ch) AND EXISTS (
          SELECT 1 FROM channel_members cm
          WHERE cm.channel_id = $3 AND cm.user_id = $2 AND cm.workspace_id = $1))
    FOR KEY SHARE OF m
), finalized AS (
    UPDATE upload_tickets t SET finalized_at = $14, attachment_id = t.id, finalizing_until = NULL
    WHERE $15::boolean AND t.id = ANY($4::text[]) AND t.finalized_at IS NULL
      AND EXISTS (SELECT 1 FROM allowed)
    RETURNING t.id
), a AS (
    INSERT INTO attachments (
        id, workspace_id, uploader_id, channel_id, storage_key, filename, size,
        declared_type, detected_type, sha256, width, height, thumbnail_key)
    SELECT f.id, allowed.workspace_id, allowed.user_id, $3, f.storage_key, f.filename, f.size,
           f.declared_type, f.detected_type, f.sha256, f.width, f.height, f.thumbnail_key
    FROM allowed
    CROSS JOIN unnest(
        $4::text[], $5::text[], $6::text[], $7::bigint[], $8::text[], $9::text[],
        $10::bytea[], $11::integer[], $12::integer[], $13::text[]
    ) AS f(id, storage_key, filename, size, declared_type, detected_type,
           sha256, width, height, thumbnail_key)
    WHERE NOT $15::boolean OR f.id IN (SELECT id FROM finalized)
    RETURNING *
), logged AS (
    INSERT INTO audit_log
        (workspace_id, actor_id, action, attachment_id, request_id, client_addr, details)
    SELECT a.workspace_id, a.uploader_id, $16, a.id, $17, $18,
           jsonb_build_object('size', a.size, 'filename', a.filename,
                              'type', a.detected_type, 'channel_id', a.channel_id)
    FROM a
)
SELECT {_ATTACHMENT}, q.refusal FROM q LEFT JOIN a ON true
"""


@dataclass(frozen=True, slots=True)
class Inserted:
    rows: list[Attachment]  # empty: the uploader is no longer a member, or a quota refused
    refusal: QuotaRefusal | None


async def insert_attachments(
    conn: asyncpg.Connection,
    workspace_id: int,
    uploader_id: int,
    channel_id: int | None,
    files: Sequence[NewAttachment],
    now: dt.datetime,
    audit: tuple[str, str | None, str | None],
    *,
    tickets: bool = False,
) -> Inserted:
    """Insert one upload's files, in order; none unless the uploader is still a member and
    every quota has room for them (open tickets at ``now`` reserve theirs). ``tickets``: the
    files of the unfinalized upload tickets of the same ids, finalized at ``now`` by this
    statement (a ticket finalized already: no row for its file). ``audit``: the action
    each file's audit record names, the request id, the client address."""
    found = await conn.fetch(
        INSERT_ATTACHMENTS,
        workspace_id,
        uploader_id,
        channel_id,
        [f.id for f in files],
        [f.storage_key for f in files],
        [f.filename for f in files],
        [f.size for f in files],
        [f.declared_type for f in files],
        [f.detected_type for f in files],
        [f.sha256 for f in files],
        [f.width for f in files],
        [f.height for f in files],
        [f.thumbnail_key for f in files],
        now,
        tickets,
        *audit,
    )
    order = {f.id: i for i, f in enumerate(files)}
    rows = sorted(
        (to_attachment(r) for r in found if r["id"] is not None), key=lambda a: order[a.id]
    )
    return Inserted(rows, to_refusal(found[0]["refusal"]) if found else None)


SELECT_ATTACHMENTS_BY_IDS = f"SELECT {_ATTACHMENT} FROM attachments a WHERE a.id = ANY($1::text[])"


async def select_attachments_by_ids(
    conn: asyncpg.Connection, ids: Sequence[str]
) -> list[Attachment]:
    found = {
        r["id"]: to_attachment(r) for r in await conn.fetch(SELECT_ATTACHMENTS_BY_IDS, list(ids))
    }
    return [found[i] for i in ids if i in found]


# Readable when linked to a message the reader may read (workspace member; channel member if
# private), or unlinked and uploaded by them while still a member. Callers also apply the
# token's workspace restriction (Identity.may_use_workspace).
# A bot reads the files of the channels it is in, public ones too: removed from a channel,
# its entries from there can no longer fetch that channel's files (people keep reading a
# public channel's files without joining it).
SELECT_ATTACHMENT_FOR_READER = f"""
SELECT {_ATTACHMENT}
FROM attachments a
JOIN memberships m ON m.workspace_id = a.workspace_id AND m.user_id = $2
LEFT JOIN messages msg ON msg.id = a.message_id
LEFT JOIN channels c ON c.id = msg.channel_id
WHERE a.id = $1
  AND CASE
      WHEN a.message_id IS NULL THEN a.uploader_id = $2
      ELSE c.workspace_id = a.workspace_id AND ((NOT c.private AND m.role <> 'bot') OR EXISTS (
          SELECT 1 FROM channel_members cm WHERE cm.channel_id = c.id AND cm.user_id = $2))
  END
"""


async def select_attachment_for_reader(
    conn: asyncpg.Connection, attachment_id: str, user_id: int
) -> Attachment | None:
    """The attachment if ``user_id`` may read it now; None exactly as for a missing one."""
    row = await conn.fetchrow(SELECT_ATTACHMENT_FOR_READER, attachment_id, user_id)
    return to_attachment(row) if row else None


# The same, for a download: a bot's live inbox entries carrying the file are stamped fetched
# (the first time), in the same statement, so a download stays one round trip. For anyone
# else the UPDATE finds nothing by the primary key's first column.
SELECT_ATTACHMENT_FOR_FETCH = f"""
WITH found AS ({SELECT_ATTACHMENT_FOR_READER}), stamped AS (
    UPDATE inbox_entries e SET fetched_at = now()
    WHERE e.bot_id = $2 AND $1 = ANY(e.attachment_ids) AND e.fetched_at IS NULL
      AND e.expires_at > now() AND EXISTS (SELECT 1 FROM found)
    RETURNING e.id
)
SELECT *, (SELECT array_agg(id ORDER BY id) FROM stamped) AS stamped_entries FROM found
"""


async def select_attachment_for_fetch(
    conn: asyncpg.Connection, attachment_id: str, user_id: int
) -> tuple[Attachment, list[int]] | None:
    """As ``select_attachment_for_reader``, for a download of the bytes; with the ids of the
    caller's inbox entries this fetch stamped (a bot's first download of the file)."""
    row = await conn.fetchrow(SELECT_ATTACHMENT_FOR_FETCH, attachment_id, user_id)
    return (to_attachment(row), list(row["stamped_entries"] or ())) if row else None


# Run in the message's insert transaction. The rule: an attachment is linked once, by its
# uploader, in its own workspace, into the channel it was uploaded for (if any). A concurrent
# link waits for the row lock, then re-checks ``message_id IS NULL``: exactly one wins.
# Position keeps the sender's order.
# With the audit record of each link (``$6``, ``$7``: the request id and client address).
LINK_ATTACHMENTS = """
WITH linked AS (
    UPDATE attachments a
    SET message_id = $5, linked_at = now(), position = array_position($1::text[], a.id) - 1
    WHERE a.id = ANY($1::text[]) AND a.uploader_id = $2 AND a.workspace_id = $3
      AND a.message_id IS NULL AND (a.channel_id IS NULL OR a.channel_id = $4)
    RETURNING a.id
), logged AS (
    INSERT INTO audit_log
        (workspace_id, actor_id, action, attachment_id, request_id, client_addr, details)
    SELECT $3, $2, 'file.attached', linked.id, $6, $7,
           jsonb_build_object('message_id', $5::bigint, 'channel_id', $4::bigint)
    FROM linked
)
SELECT id FROM linked
"""


async def link_attachments(
    conn: asyncpg.Connection,
    ids: Sequence[str],
    uploader_id: int,
    workspace_id: int,
    channel_id: int,
    message_id: int,
    origin: tuple[str | None, str | None] = (None, None),
) -> list[str]:
    """Link what the rule allows of ``ids`` (which must be distinct); the ids linked.
    ``origin``: the request id and client address the audit records."""
    rows = await conn.fetch(
        LINK_ATTACHMENTS, list(ids), uploader_id, workspace_id, channel_id, message_id, *origin
    )
    return [r["id"] for r in rows]


# The caller's own uploads here that are already linked: saying so reveals nothing new.
# Anything else unlinkable (another user's, another workspace's, missing) gets one answer.
SELECT_OWN_LINKED_IDS = """
SELECT a.id FROM attachments a
WHERE a.id = ANY($1::text[]) AND a.uploader_id = $2 AND a.workspace_id = $3
  AND a.message_id IS NOT NULL
"""


async def select_own_linked_ids(
    conn: asyncpg.Connection, ids: Sequence[str], uploader_id: int, workspace_id: int
) -> list[str]:
    rows = await conn.fetch(SELECT_OWN_LINKED_IDS, list(ids), uploader_id, workspace_id)
    return [r["id"] for r in rows]


SELECT_ATTACHMENTS_OF_MESSAGES = f"""
SELECT {_ATTACHMENT} FROM attachments a
WHERE a.message_id = ANY($1::bigint[])
ORDER BY a.message_id, a.position NULLS LAST, a.created_at, a.id
"""


async def select_attachments_of_messages(
    conn: asyncpg.Connection, message_ids: Sequence[int]
) -> dict[int, list[Attachment]]:
    found: dict[int, list[Attachment]] = {}
    if not message_ids:
        return found
    for row in await conn.fetch(SELECT_ATTACHMENTS_OF_MESSAGES, list(message_ids)):
        found.setdefault(row["message_id"], []).append(to_attachment(row))
    return found


# Explicit, not left to ON DELETE CASCADE, so the caller learns the keys (the trigger queues
# them either way) and deletes the objects after its commit: rows first, objects second.
DELETE_ATTACHMENTS_OF_MESSAGE = """
DELETE FROM attachments WHERE message_id = $1 RETURNING storage_key, thumbnail_key
"""


async def delete_attachments_of_message(conn: asyncpg.Connection, message_id: int) -> list[str]:
    keys: list[str] = []
    for row in await conn.fetch(DELETE_ATTACHMENTS_OF_MESSAGE, message_id):
        keys.append(row["storage_key"])
        if row["thumbnail_key"] is not None:
            keys.append(row["thumbnail_key"])
    return keys
