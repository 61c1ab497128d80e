"""Frozen domain records returned by the db layer."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

Role = Literal["owner", "admin", "member", "bot"]
ROLES: tuple[Role, ...] = ("owner", "admin", "member", "bot")
MANAGER_ROLES: frozenset[str] = frozenset({"owner", "admin"})
# A channel anyone may be in ("channel"), or a direct message: a fixed set of members.
ChannelKind = Literal["channel", "dm"]
DIRECT: ChannelKind = "dm"


@dataclass(frozen=True, slots=True)
class User:
    id: int
    username: str
    display_name: str
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class Workspace:
    id: int
    slug: str
    name: str
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class Membership:
    workspace: Workspace
    user_id: int
    role: Role


@dataclass(frozen=True, slots=True)
class Member:
    user: User
    role: Role
    joined_at: dt.datetime


@dataclass(frozen=True, slots=True)
class ApiToken:
    id: int
    user_id: int
    workspace_id: int | None
    name: str
    hint: str
    created_at: dt.datetime
    expires_at: dt.datetime | None
    last_used_at: dt.datetime | None
    revoked_at: dt.datetime | None


@dataclass(frozen=True, slots=True)
class Credential:
    user: User
    token_id: int | None  # None for a browser session
    workspace_id: int | None  # a token restricted to one workspace
    expires_at: dt.datetime | None
    revoked: bool


@dataclass(frozen=True, slots=True)
class Channel:
    id: int
    workspace_id: int
    name: str
    topic: str
    private: bool
    created_by: int | None  # None once the creator's account is gone
    created_at: dt.datetime
    kind: ChannelKind = "channel"
    # Set while the channel is archived: read-only, its history still readable.
    archived_at: dt.datetime | None = None

    @property
    def direct(self) -> bool:
        return self.kind == DIRECT

    @property
    def archived(self) -> bool:
        return self.archived_at is not None


@dataclass(frozen=True, slots=True)
class DirectMessage:
    """A direct message and its current members (by username)."""

    channel: Channel
    members: list[User]


@dataclass(frozen=True, slots=True)
class ChannelView:
    channel: Channel
    joined: bool


@dataclass(frozen=True, slots=True)
class ReadState:
    """How far a member has read a channel, and what is left: the messages after the position
    (since joining, before any), not their own; and those of them that mention the member."""

    last_read_message_id: int | None  # None: nothing read yet
    unread_count: int
    mention_count: int


@dataclass(frozen=True, slots=True)
class ListedChannel:
    """A channel in the list, with the caller's read state (nothing unread when not in it)."""

    view: ChannelView
    read: ReadState


@dataclass(frozen=True, slots=True)
class ListedDirect:
    dm: DirectMessage
    read: ReadState


@dataclass(frozen=True, slots=True)
class ChannelAccess:
    """A channel with the caller's standing; the db gives None outside its workspace."""

    channel: Channel
    role: Role  # the caller's workspace role
    joined: bool


@dataclass(frozen=True, slots=True)
class ChannelMember:
    user: User
    joined_at: dt.datetime


@dataclass(frozen=True, slots=True)
class Link:
    """An external link a message carries (validated: http or https)."""

    url: str
    title: str


@dataclass(frozen=True, slots=True)
class Message:
    id: int
    channel_id: int
    workspace_id: int
    author: User
    content: str
    client_id: str | None
    created_at: dt.datetime
    edited_at: dt.datetime | None
    links: tuple[Link, ...] = ()
    # Loaded separately (messages.attachments.with_attachments), in the sender's order.
    attachments: tuple[Attachment, ...] = ()
    # Loaded separately too (messages.tallies.with_reactions), by first use.
    reactions: tuple[ReactionCount, ...] = ()


@dataclass(frozen=True, slots=True)
class ReactionCount:
    """One emoji on a message: how many reacted with it, and whether the viewer did."""

    emoji: str
    count: int
    mine: bool


@dataclass(frozen=True, slots=True)
class Attachment:
    id: str
    workspace_id: int
    uploader_id: int
    channel_id: int | None  # the channel it may be linked into, when the upload named one
    message_id: int | None  # None until linked to a message
    storage_key: str
    filename: str  # sanitised; display only
    size: int
    declared_type: str
    detected_type: str | None
    sha256: bytes
    width: int | None
    height: int | None
    thumbnail_key: str | None
    created_at: dt.datetime
    linked_at: dt.datetime | None


Delivery = Literal["websocket", "push", "poll"]
DELIVERIES: tuple[Delivery, ...] = ("websocket", "push", "poll")
# The modes whose bots get every event in their inbox as well.
INBOX_DELIVERIES: tuple[Delivery, ...] = ("push", "poll")


@dataclass(frozen=True, slots=True)
class Bot:
    user: User
    workspace_id: int
    delivery: Delivery
    callback_url: str | None
    created_at: dt.datetime
    # Push delivery's state (never the signing secret: that stays in db.push).
    callback_disabled_at: dt.datetime | None = None
    last_delivered_at: dt.datetime | None = None
    last_delivery_error: str | None = None
    last_delivery_error_at: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class InboxEntry:
    bot_id: int
    id: int  # increasing per bot
    type: str
    body: str  # JSON text, as stored
    created_at: dt.datetime
    expires_at: dt.datetime
    leased_until: dt.datetime | None
    fetched_at: dt.datetime | None
    acked_at: dt.datetime | None
    attempts: int


@dataclass(frozen=True, slots=True)
class PushClaim:
    """A push-mode bot's oldest unacknowledged entry, claimed for one attempt."""

    bot_id: int
    workspace_id: int
    entry_id: int
    type: str
    body: str  # JSON text, as stored
    created_at: dt.datetime
    expires_at: dt.datetime
    attempt: int  # this attempt's number, from 1
    callback_url: str
    secrets: tuple[str, ...]  # the current signing secret first, then one in its overlap
