"""JSON shape of a workspace member."""

from __future__ import annotations

import datetime as dt
from typing import Any

from echora_server.accounts.shapes import User, user_json
from echora_server.db.records import Member, Role


class WorkspaceMember(User):
    role: Role
    joined_at: dt.datetime


def member_json(member: Member) -> dict[str, Any]:
    return {
        **user_json(member.user),
        "role": member.role,
        "joined_at": member.joined_at.isoformat(),
    }
