"""Request and answer bodies of upload tickets."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import Field
from pydantic.json_schema import SkipJsonSchema

from echora_server.core.shapes import Shape
from echora_server.core.validation import MAX_ID, Body
from echora_server.db.tickets import Ticket
from echora_server.storage.base import PresignedPost


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


class FinalizeTicket(Body):
    token: str = Field(min_length=1, max_length=100, description="The ticket's echu_ token")


class SendBytes(Shape):
    method: Literal["PUT", "POST"] = Field(
        description="POST (a form straight to the store) when the workspace has direct "
        "uploads on, the store keeps form policies, and, for a request with an Origin header "
        "(a web page), the store's CORS rules let that origin post; else PUT through Echora"
    )
    url: str = Field(description="PUT: this server's path; POST: the store's absolute URL")
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


def issued_json(ticket: Ticket, token: str, post: PresignedPost | None) -> dict[str, Any]:
    upload: dict[str, Any] = {
        "method": "PUT",
        "url": ticket_path(ticket),
        "headers": {"Authorization": f"Bearer {token}"},
    }
    if post is not None:
        upload = {"method": "POST", "url": post.url, "headers": {}, "fields": post.fields}
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
