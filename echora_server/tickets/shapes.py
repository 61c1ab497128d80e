"""Request and answer bodies of upload tickets."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import Field
from pydantic.json_schema import SkipJsonSchema

from echora_server.core.shapes import Shape
from echora_server.core.validation import MAX_ID, Body
from echora_server.db.tickets import Ticket
from echora_server.storage.base import PresignedPost, PresignedPut


class CreateTicket(Body):
    filename: str = Field(min_length=1, max_length=255, description="Cut to 100 characters")
    size: int = Field(ge=0, le=2**40, description="Exactly the bytes that will be sent")
    content_type: str | None = Field(
        None,
        max_length=255,
        description="Default: from the filename's extension (422 when it tells nothing)",
    )
    channel_id: int | None = Field(None, ge=1, le=MAX_ID)
    workspace_id: int | None = Field(None, ge=1, le=MAX_ID)
    sha256: str | None = Field(
        None,
        pattern="^[0-9a-f]{64}$",
        description="The bytes' SHA-256, lowercase hex (`sha256sum`). Optional; when given, "
        "bytes that hash otherwise are refused, and the bytes may go straight to the store "
        "by a presigned PUT the store verifies",
    )


class FinalizeTicket(Body):
    token: str = Field(min_length=1, max_length=100, description="The ticket's echu_ token")


class SendBytes(Shape):
    method: Literal["PUT", "POST"] = Field(
        description="When the workspace has direct uploads on and the store takes them: "
        "PUT straight to the store (an absolute URL) for a ticket that declared its sha256, "
        "if the store verifies signed checksums; else POST (a form straight to the store) "
        "if the store keeps form policies. For a request with an Origin header (a web page), "
        "either only if the store's CORS rules let that origin send it. Otherwise PUT "
        "through Echora (a path on this server)"
    )
    url: str = Field(
        description="A path on this server (PUT through Echora) or the store's absolute URL"
    )
    headers: dict[str, str] = Field(description="Send these headers with the bytes")
    fields: dict[str, str] | SkipJsonSchema[None] = Field(
        None,
        description="POST only: form fields to send, in order, before the file "
        "(multipart/form-data, the file's field last, named file)",
    )


class IssuedTicket(Shape):
    id: str = Field(description="The upload's id, and the attachment's after finalize")
    token: str = Field(description="Single-use; shown once")
    filename: str
    size: int
    content_type: str
    expires_at: dt.datetime = Field(description="Sending must start before this")
    finalize_before: dt.datetime
    upload: SendBytes


class Received(Shape):
    id: str
    size: int
    sha256: str


def ticket_path(ticket: Ticket) -> str:
    return f"/api/uploads/{ticket.id}"


def issued_json(
    ticket: Ticket, token: str, direct: PresignedPost | PresignedPut | None
) -> dict[str, Any]:
    upload: dict[str, Any] = {
        "method": "PUT",
        "url": ticket_path(ticket),
        "headers": {"Authorization": f"Bearer {token}"},
    }
    if isinstance(direct, PresignedPost):
        upload = {"method": "POST", "url": direct.url, "headers": {}, "fields": direct.fields}
    elif isinstance(direct, PresignedPut):
        upload = {"method": "PUT", "url": direct.url, "headers": direct.headers}
    return {
        "id": ticket.id,
        "token": token,
        "filename": ticket.filename,
        "size": ticket.size,
        "content_type": ticket.declared_type,
        "expires_at": ticket.expires_at.isoformat(),
        "finalize_before": ticket.finalize_before.isoformat(),
        "upload": upload,
    }
