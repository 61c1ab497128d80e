"""Reactions in messages: counted per emoji for a whole page in one query, with "mine" as one
viewer sees it. Events are framed once for every viewer, so theirs say "mine" for nobody."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import asyncpg

from echora_server.db import reactions
from echora_server.db.records import Message


async def with_reactions(
    conn: asyncpg.Connection, messages: Sequence[Message], viewer_id: int | None
) -> list[Message]:
    found = await reactions.select_reactions_of_messages(conn, [m.id for m in messages], viewer_id)
    return [replace(m, reactions=tuple(found.get(m.id, ()))) for m in messages]


def for_everyone(message: Message) -> Message:
    """The message as an event carries it: counts, and "mine" for nobody."""
    if not any(r.mine for r in message.reactions):
        return message
    return replace(message, reactions=tuple(replace(r, mine=False) for r in message.reactions))
