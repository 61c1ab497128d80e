"""Mentions: an ``@username`` in a message's text that names a member of its channel. They are
recorded as the message is written and again when it is edited, and count in its readers'
``mention_count`` (``db.readstate``)."""

from __future__ import annotations

import re

import asyncpg

from echora_server.db import readstate
from echora_server.db.records import Message

# A username (accounts.service.USERNAME, any case) after an @ that does not continue a word or
# an address: "bob@example.com" mentions no one.
MENTION = re.compile(r"(?<![\w@.-])@([A-Za-z0-9][A-Za-z0-9._-]{0,62})")
_TRAILING = "._-"


def mentioned_usernames(content: str) -> list[str]:
    """The usernames the text may name, lower-cased. A name that ends in punctuation is also
    tried without it ("thanks @bob." names bob, or a user "bob." if there is one)."""
    names: set[str] = set()
    for match in MENTION.finditer(content):
        name = match.group(1).lower()
        names.add(name)
        if trimmed := name.rstrip(_TRAILING):
            names.add(trimmed)
    return sorted(names)


async def record_mentions(
    conn: asyncpg.Connection, message: Message, previous: str | None = None
) -> None:
    """In the write's transaction; ``previous`` is the text an edit replaced. A message whose
    text names no one, and did not before, costs no query."""
    names = mentioned_usernames(message.content)
    if names or (previous is not None and mentioned_usernames(previous)):
        await readstate.record_mentions(
            conn, message.id, message.channel_id, message.author.id, names
        )
