"""The events outbox behind the PostgreSQL fan-out (rows by id, notified by id)."""

from __future__ import annotations

import asyncpg

# One statement: the row and the notification commit (or fail) together.
INSERT_AND_NOTIFY = """
WITH e AS (INSERT INTO events (body) VALUES ($2::jsonb) RETURNING id)
SELECT pg_notify($1, id::text) FROM e
"""


async def insert_and_notify(conn: asyncpg.Connection, channel: str, body: str) -> None:
    await conn.execute(INSERT_AND_NOTIFY, channel, body)


SELECT_EVENT_BODIES = "SELECT id, body::text FROM events WHERE id = ANY($1::bigint[])"


async def select_event_bodies(conn: asyncpg.Connection, ids: list[int]) -> list[str]:
    """The bodies in the order given (notification order is commit order)."""
    found = {row["id"]: row["body"] for row in await conn.fetch(SELECT_EVENT_BODIES, ids)}
    return [found[i] for i in ids if i in found]


DELETE_OLD_EVENTS = "DELETE FROM events WHERE created_at < now() - make_interval(secs => $1)"


async def delete_events_older_than(conn: asyncpg.Connection, seconds: float) -> None:
    await conn.execute(DELETE_OLD_EVENTS, seconds)


async def notify(conn: asyncpg.Connection, channel: str, payload: str) -> None:
    """A notification that carries its event (nothing stored)."""
    await conn.execute("SELECT pg_notify($1, $2)", channel, payload)


# In the order given (a volatile output is computed after the sort).
NOTIFY_ALL = """
SELECT pg_notify($1, t.payload)
FROM unnest($2::text[]) WITH ORDINALITY AS t(payload, n) ORDER BY t.n
"""


async def notify_all(conn: asyncpg.Connection, channel: str, payloads: list[str]) -> None:
    """Notifications that carry their events, in one statement; in a transaction they are
    sent by its commit (and PostgreSQL delivers transactions' notifications in commit order)."""
    await conn.execute(NOTIFY_ALL, channel, payloads)
