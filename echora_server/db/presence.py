"""Presence (sql/0014): each process's lease, what its sockets say of their users, and what
was last announced of each user. The functions settle a user's status under a lock of theirs,
so a change is reported once whichever process made it (see docs/architecture.md)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import asyncpg

Status = Literal["online", "away", "offline"]


class LeaseLost(Exception):
    """This process's lease ran out (or was swept): its rows no longer count."""


@dataclass(frozen=True, slots=True)
class Change:
    user_id: int
    status: Status
    workspace_ids: tuple[int, ...]  # the user's workspaces: whose members may hear of it


def _changes(rows: Sequence[asyncpg.Record]) -> list[Change]:
    return [Change(r["changed_user"], r["new_status"], tuple(r["workspaces"])) for r in rows]


REGISTER = """
INSERT INTO presence_processes (id, expires_at) VALUES ($1, now() + make_interval(secs => $2))
"""


async def register(conn: asyncpg.Connection, process_id: uuid.UUID, lease: float) -> None:
    await conn.execute(REGISTER, process_id, lease)


# Renewed only while it holds: an expired lease may have been swept (its users announced
# offline) or be about to be, so the process starts again under a new id.
RENEW = """
UPDATE presence_processes SET expires_at = now() + make_interval(secs => $2)
WHERE id = $1 AND expires_at > now()
"""


async def renew(conn: asyncpg.Connection, process_id: uuid.UUID, lease: float) -> bool:
    """False: the lease was lost."""
    return bool(await conn.execute(RENEW, process_id, lease) == "UPDATE 1")


LINGER = """
UPDATE presence_processes SET expires_at = now() + make_interval(secs => $2) WHERE id = $1
"""


async def linger(conn: asyncpg.Connection, process_id: uuid.UUID, grace: float) -> None:
    """On a clean stop: the process's users stay as they are for the grace (their clients
    reconnect elsewhere meanwhile), then any other process's sweep settles them."""
    await conn.execute(LINGER, process_id, grace)


WRITE = "SELECT * FROM presence_write($1, $2::bigint[], $3::boolean[])"


async def write(
    conn: asyncpg.Connection,
    process_id: uuid.UUID,
    user_ids: Sequence[int],
    away: Sequence[bool | None],
) -> list[Change]:
    """What this process's sockets say of these users (None: no socket left), in the
    caller's transaction; the status changes it made. Raises LeaseLost."""
    try:
        rows = await conn.fetch(WRITE, process_id, list(user_ids), list(away))
    except asyncpg.ObjectNotInPrerequisiteStateError as exc:
        raise LeaseLost(str(exc)) from exc
    return _changes(rows)


SWEEP = "SELECT * FROM presence_sweep()"


async def sweep(conn: asyncpg.Connection) -> list[Change]:
    """Expired processes removed, their users settled, in the caller's transaction."""
    return _changes(await conn.fetch(SWEEP))


SELECT_WORKSPACE_IDS = """
SELECT workspace_id FROM memberships
WHERE user_id = $1 AND ($2::bigint IS NULL OR workspace_id = $2)
ORDER BY workspace_id
"""


async def select_workspace_ids(
    conn: asyncpg.Connection, user_id: int, only: int | None = None
) -> list[int]:
    """The user's workspaces (``only``: that one, if the user is in it)."""
    return [r["workspace_id"] for r in await conn.fetch(SELECT_WORKSPACE_IDS, user_id, only)]


SELECT_SNAPSHOT = """
SELECT m.workspace_id, p.user_id, p.status
FROM presence p JOIN memberships m ON m.user_id = p.user_id
WHERE m.workspace_id = ANY ($1::bigint[])
ORDER BY p.user_id
"""


async def select_snapshot(
    conn: asyncpg.Connection, workspace_ids: Sequence[int]
) -> dict[int, dict[int, Status]]:
    """Per workspace: its members who are not offline, and their status."""
    found: dict[int, dict[int, Status]] = {w: {} for w in workspace_ids}
    for row in await conn.fetch(SELECT_SNAPSHOT, list(workspace_ids)):
        found[row["workspace_id"]][row["user_id"]] = row["status"]
    return found
