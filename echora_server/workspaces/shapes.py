"""JSON shape of a workspace member."""

from __future__ import annotations

from typing import Any

from echora_server.accounts.shapes import user_json
from echora_server.db.records import Member


def member_json(member: Member) -> dict[str, Any]:
    return {
        **user_json(member.user),
        "role": member.role,
        "joined_at": member.joined_at.isoformat(),
    }
