"""JSON shapes of users, memberships and API tokens."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import Field

from echora_server.core.shapes import Shape
from echora_server.db import records
from echora_server.db.records import Role


class User(Shape):
    id: int
    username: str
    display_name: str


class Membership(Shape):
    """A workspace of mine, and my role in it."""

    id: int
    slug: str
    name: str
    role: Role


class Token(Shape):
    id: int
    name: str
    hint: str = Field(description="The secret's first characters, to tell tokens apart.")
    workspace_id: int | None
    created_at: dt.datetime
    expires_at: dt.datetime | None
    last_used_at: dt.datetime | None
    revoked: bool


def user_json(user: records.User) -> dict[str, Any]:
    return {"id": user.id, "username": user.username, "display_name": user.display_name}


def membership_json(membership: records.Membership) -> dict[str, Any]:
    ws = membership.workspace
    return {"id": ws.id, "slug": ws.slug, "name": ws.name, "role": membership.role}


def token_json(token: records.ApiToken) -> dict[str, Any]:
    def iso(value: Any) -> str | None:
        return value.isoformat() if value is not None else None

    return {
        "id": token.id,
        "name": token.name,
        "hint": token.hint,
        "workspace_id": token.workspace_id,
        "created_at": iso(token.created_at),
        "expires_at": iso(token.expires_at),
        "last_used_at": iso(token.last_used_at),
        "revoked": token.revoked_at is not None,
    }
