"""Events: what the server tells WebSocket clients (types only; ``bus`` sends them)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

MESSAGE_CREATED = "message.created"
MESSAGE_UPDATED = "message.updated"
MESSAGE_DELETED = "message.deleted"
REACTION_ADDED = "reaction.added"
REACTION_REMOVED = "reaction.removed"
CHANNEL_MEMBER_ADDED = "channel.member_added"
CHANNEL_MEMBER_REMOVED = "channel.member_removed"
WORKSPACE_MEMBER_REMOVED = "workspace.member_removed"
# A channel's lifecycle (``data["channel"]``: its shape after the change, before a delete).
# They go to the channel's members and, for a public channel, to every member of its
# workspace, whose channel lists show it (``reaches_workspace``).
CHANNEL_CREATED = "channel.created"
CHANNEL_UPDATED = "channel.updated"  # renamed, or its topic set
CHANNEL_ARCHIVED = "channel.archived"
CHANNEL_UNARCHIVED = "channel.unarchived"
CHANNEL_DELETED = "channel.deleted"  # the last event of that channel
CHANNEL_LIFECYCLE = frozenset(
    {CHANNEL_CREATED, CHANNEL_UPDATED, CHANNEL_ARCHIVED, CHANNEL_UNARCHIVED, CHANNEL_DELETED}
)
# A member's read position in a channel moved: sent to every socket of that member only
# (``user_id``; the channel is in ``data``), so all their clients agree on what is unread.
CHANNEL_READ = "channel.read"
# Internal to the hubs (never sent to clients): a token was revoked or a session ended,
# so sockets opened with it close. ``data`` holds "token_id" or "session" (digest, hex).
CREDENTIAL_REVOKED = "credential.revoked"
# Internal too: inbox entries were staged for these bots (``data["bot_ids"]``), so every
# process wakes its long polls of them.
INBOX_STAGED = "inbox.staged"
# Internal and ephemeral: users' presence changed (``data["changes"]``: [user id, status,
# the user's workspace ids or None when too many to carry]); each process tells its sockets.
PRESENCE_CHANGED = "presence.changed"
# Ephemeral: someone is typing in a channel; never stored, never in a bot's inbox.
TYPING = "typing"
NO_WORKSPACE = 0
# What a client may be sent, and so what a bot's inbox records.
CLIENT_EVENTS = frozenset(
    {
        MESSAGE_CREATED,
        MESSAGE_UPDATED,
        MESSAGE_DELETED,
        REACTION_ADDED,
        REACTION_REMOVED,
        CHANNEL_MEMBER_ADDED,
        CHANNEL_MEMBER_REMOVED,
        WORKSPACE_MEMBER_REMOVED,
        *CHANNEL_LIFECYCLE,
        CHANNEL_READ,
    }
)
# Addressed to the sockets of ``Event.user_id`` alone (the hub sends them nowhere else).
USER_EVENTS = frozenset({CHANNEL_READ})


def reaches_workspace(event: Event) -> bool:
    """A public channel's lifecycle event: for its whole workspace, not just its members."""
    return event.type in CHANNEL_LIFECYCLE and not event.data["channel"]["private"]


@dataclass(frozen=True, slots=True)
class Event:
    type: str
    workspace_id: int
    # The channel whose subscribers receive it; None for workspace-level events, which
    # only the hub itself consumes (to drop a removed member's subscriptions), and for
    # ``USER_EVENTS``.
    channel_id: int | None
    # The JSON body sent to clients, beside "type".
    data: dict[str, Any] = field(default_factory=dict)
    # The user a membership change is about; the addressee of ``USER_EVENTS``.
    user_id: int | None = None

    def frame(self) -> str:
        return json.dumps({"type": self.type, **self.data}, separators=(",", ":"))

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "workspace_id": self.workspace_id,
            "channel_id": self.channel_id,
            "data": self.data,
            "user_id": self.user_id,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Event:
        return cls(raw["type"], raw["workspace_id"], raw["channel_id"], raw["data"], raw["user_id"])
