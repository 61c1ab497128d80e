"""Request and answer bodies of a workspace's upload settings and limits."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from echora_server.core.shapes import Shape
from echora_server.core.validation import Body
from echora_server.db.policies import WorkspaceSettings
from echora_server.files.policy import TYPE_GROUPS
from echora_server.workspaces.settings import Limits

_MEDIA_TYPE = r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}"
TYPE_ENTRY = f"^({'|'.join(sorted(TYPE_GROUPS))}|{_MEDIA_TYPE})$"
TypeEntry = Annotated[str, Field(pattern=TYPE_ENTRY, max_length=255)]
Bytes = Annotated[int, Field(ge=0, le=2**62)]
_TYPES = f"Media types (sniffed) or groups: {', '.join(sorted(TYPE_GROUPS))}"


class ChangeSettings(Body):
    """Only the settings sent change; null clears a limit."""

    max_file_size: Bytes | None = Field(
        None, description="Largest file in bytes, at most the server's; null: the server's"
    )
    allowed_types: list[TypeEntry] | None = Field(
        None, max_length=100, description=f"{_TYPES}; null: every type"
    )
    denied_types: list[TypeEntry] | None = Field(
        None, max_length=100, description=f"{_TYPES}; checked before allowed_types"
    )
    tickets: bool = Field(True, description="Upload tickets (POST /api/uploads) on")
    direct_uploads: bool = Field(True, description="Tickets may send bytes straight to the store")
    storage_quota: Bytes | None = Field(None, description="Stored bytes for the workspace")
    member_quota: Bytes | None = Field(None, description="Stored bytes per member")
    bot_quota: Bytes | None = Field(None, description="Stored bytes per bot")


class Settings(Shape):
    max_file_size: int | None
    allowed_types: list[str] | None
    denied_types: list[str]
    tickets: bool
    direct_uploads: bool
    storage_quota: int | None
    member_quota: int | None
    bot_quota: int | None
    server_max_file_size: int
    type_groups: dict[str, list[str]]


class Quota(Shape):
    bytes_stored: int
    bytes_reserved: int = Field(description="Declared by open upload tickets")
    bytes_used: int = Field(description="Stored plus reserved: what a quota counts")
    bytes_allowed: int | None


class MyQuota(Quota):
    quota: Literal["member", "bot"]


class LimitsShape(Shape):
    max_file_size: int
    allowed_types: list[str] | None = Field(description="Media types; null: every type")
    denied_types: list[str]
    tickets: bool
    direct_uploads: bool = Field(description="Tickets will send bytes straight to the store")
    workspace: Quota
    mine: MyQuota


def settings_json(settings: WorkspaceSettings, server_max: int) -> dict[str, Any]:
    allowed = settings.allowed_types
    return {
        "max_file_size": settings.max_file_size,
        "allowed_types": list(allowed) if allowed is not None else None,
        "denied_types": list(settings.denied_types),
        "tickets": settings.tickets,
        "direct_uploads": settings.direct_uploads,
        "storage_quota": settings.storage_quota,
        "member_quota": settings.member_quota,
        "bot_quota": settings.bot_quota,
        "server_max_file_size": server_max,
        "type_groups": {name: sorted(types) for name, types in sorted(TYPE_GROUPS.items())},
    }


def _quota(stored: int, reserved: int, allowed: int | None) -> dict[str, Any]:
    return {
        "bytes_stored": stored,
        "bytes_reserved": reserved,
        "bytes_used": stored + reserved,
        "bytes_allowed": allowed,
    }


def limits_json(limits: Limits) -> dict[str, Any]:
    policy, settings, usage = limits.policy, limits.settings, limits.usage
    bot = limits.role == "bot"
    return {
        "max_file_size": policy.max_bytes,
        "allowed_types": sorted(policy.allowed) if policy.allowed is not None else None,
        "denied_types": sorted(policy.denied),
        "tickets": policy.tickets,
        "direct_uploads": policy.tickets and policy.direct_uploads and limits.direct_available,
        "workspace": _quota(
            usage.workspace_stored, usage.workspace_reserved, settings.storage_quota
        ),
        "mine": {
            **_quota(
                usage.user_stored,
                usage.user_reserved,
                settings.bot_quota if bot else settings.member_quota,
            ),
            "quota": "bot" if bot else "member",
        },
    }
