"""JSON shapes of users, memberships and API tokens."""

from __future__ import annotations

from typing import Any

from echora_server.db.records import ApiToken, Membership, User


def user_json(user: User) -> dict[str, Any]:
    return {"id": user.id, "username": user.username, "display_name": user.display_name}


def membership_json(membership: Membership) -> dict[str, Any]:
    ws = membership.workspace
    return {"id": ws.id, "slug": ws.slug, "name": ws.name, "role": membership.role}


def token_json(token: ApiToken) -> dict[str, Any]:
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
