"""Frozen domain records returned by the db layer."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

Role = Literal["owner", "admin", "member", "bot"]
ROLES: tuple[Role, ...] = ("owner", "admin", "member", "bot")
MANAGER_ROLES: frozenset[str] = frozenset({"owner", "admin"})


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
    """What a presented session cookie or API token resolves to."""

    user: User
    token_id: int | None  # None for a browser session
    workspace_id: int | None  # a token restricted to one workspace
    expires_at: dt.datetime | None
    revoked: bool
