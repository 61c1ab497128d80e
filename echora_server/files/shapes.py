"""JSON shape of an attachment."""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import quote

from pydantic import Field
from pydantic.json_schema import SkipJsonSchema

from echora_server.core.shapes import Shape
from echora_server.db import records


class Attachment(Shape):
    id: str
    filename: str
    size: int
    mime_type: str = Field(description="What the bytes are, when known; else the type served.")
    sha256: str
    created_at: dt.datetime
    url: str
    # Images only (absent otherwise, never null).
    width: int | SkipJsonSchema[None] = None
    height: int | SkipJsonSchema[None] = None
    thumbnail_url: str | SkipJsonSchema[None] = None


def attachment_url(attachment: records.Attachment) -> str:
    return f"/api/files/{attachment.id}/{quote(attachment.filename, safe='')}"


def attachment_json(attachment: records.Attachment) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": attachment.id,
        "filename": attachment.filename,
        "size": attachment.size,
        # What the bytes are, when known; else the safe type a download gets.
        "mime_type": attachment.detected_type or "application/octet-stream",
        "sha256": attachment.sha256.hex(),
        "created_at": attachment.created_at.isoformat(),
        "url": attachment_url(attachment),
    }
    if attachment.width is not None and attachment.height is not None:
        body["width"], body["height"] = attachment.width, attachment.height
    if attachment.thumbnail_key is not None:
        body["thumbnail_url"] = f"/api/thumbnails/{attachment.id}"
    return body
