"""Uploads (``POST``/``PUT /api/upload``) and downloads (``/api/files``, ``/api/thumbnails``)."""

from __future__ import annotations

from contextlib import aclosing
from typing import Any

import structlog
from aiohttp import web

from echora_server.audit.tally import TALLY
from echora_server.auth.identity import Identity, require_identity
from echora_server.config import Config
from echora_server.core.metrics import METRICS
from echora_server.core.route import RequestContent, Route
from echora_server.core.shapes import Shape
from echora_server.core.validation import MAX_ID, read_query
from echora_server.db.pool import POOL
from echora_server.db.records import Attachment as AttachmentRow
from echora_server.files import downloads
from echora_server.files.shapes import Attachment, attachment_json
from echora_server.files.upload_body import UploadBody, UploadQuery, refuse_before_body
from echora_server.files.uploads import UPLOADS
from echora_server.storage.factory import STORAGE


class Uploaded(Shape):
    attachments: list[Attachment]


inbox_log = structlog.get_logger("echora.inbox")


async def upload_files(request: web.Request) -> web.Response:
    identity = await require_identity(request)  # before a single body byte is read
    uploads = request.app[UPLOADS]
    query = read_query(request, UploadQuery)
    body = await UploadBody.open(request, query, uploads.limits.idle_timeout)
    target = await uploads.target(identity, await body.target())
    async with uploads.batch(target, identity.user.id) as batch, aclosing(body.files()) as files:
        async for incoming in files:
            await batch.add(incoming)
        stored = await batch.commit()
    return web.json_response({"attachments": [attachment_json(a) for a in stored]}, status=201)


async def refuse_upload_early(request: web.Request) -> None:
    """Before ``100 Continue``: who asks, and whether the headers already rule the upload out."""
    await require_identity(request)
    uploads = request.app[UPLOADS]
    refuse_before_body(
        request,
        max_bytes=uploads.limits.max_bytes,
        max_files=uploads.limits.max_files,
        store_down=uploads.storage.availability.known_down,
    )


async def put_file(request: web.Request) -> web.Response:
    return await upload_files(request)


async def download_file(request: web.Request) -> web.StreamResponse:
    identity = await require_identity(request)
    attachment_id = request.match_info["attachment_id"]
    pool = request.app[POOL]
    if request.method == "GET":
        attachment, stamped = await downloads.fetched_attachment(pool, identity, attachment_id)
        if stamped:
            _entries_fetched(request, identity, attachment, stamped)
    else:
        attachment = await downloads.readable_attachment(pool, identity, attachment_id)
    tally = request.app[TALLY]
    return await downloads.serve(
        request,
        request.app[STORAGE],
        downloads.original(attachment),
        lambda: tally.download(attachment.workspace_id, identity.user.id, attachment.id),
    )


def _entries_fetched(
    request: web.Request, identity: Identity, attachment: AttachmentRow, entry_ids: list[int]
) -> None:
    request.app[METRICS].inbox_transitions.labels("fetched").inc(len(entry_ids))
    for entry_id in entry_ids:
        inbox_log.info(
            "inbox_fetched",
            workspace_id=attachment.workspace_id,
            bot_id=identity.user.id,
            entry_id=entry_id,
            file_id=attachment.id,
            size=attachment.size,
            name=attachment.filename,
        )


async def download_thumbnail(request: web.Request) -> web.StreamResponse:
    identity = await require_identity(request)
    attachment = await downloads.readable_attachment(
        request.app[POOL], identity, request.match_info["attachment_id"]
    )
    return await downloads.serve(request, request.app[STORAGE], downloads.thumbnail(attachment))


# The document states the default limit; a deployment may allow more.
_MAX_FILES = Config.model_fields["max_files_per_upload"].default

# Any bytes are a file, a JSON text too: no JSON type to state.
FILE_SCHEMA: dict[str, Any] = {"contentMediaType": "application/octet-stream"}
# Form parts named "file", one per file. No "type": "array" either: on the wire one part
# is a list of one, whatever JSON value it was made from.
FILE_PARTS: dict[str, Any] = {"items": FILE_SCHEMA}

UPLOAD_CONTENT = RequestContent(
    "One or more files as multipart/form-data (optional channel_id / workspace_id fields "
    "first), or one file as the raw body of any other type, named by ?filename=. "
    "No Content-Encoding.",
    {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file"],
                "properties": {
                    "channel_id": {"type": "integer", "minimum": 1, "maximum": MAX_ID},
                    "workspace_id": {"type": "integer", "minimum": 1, "maximum": MAX_ID},
                    "file": {
                        **FILE_PARTS,
                        "minItems": 1,
                        "maxItems": _MAX_FILES,
                        "description": f"At most ECHORA_MAX_FILES_PER_UPLOAD ({_MAX_FILES}) parts",
                    },
                },
                "additionalProperties": False,
            },
        },
        "*/*": {"schema": FILE_SCHEMA},
    },
    required=False,  # no body: an empty file
)
_UPLOAD_RESPONSES = {
    201: "Stored: every file, or none",
    400: "Interrupted or malformed body",
    403: "Not in the channel",
    404: "No such channel or workspace of mine",
    408: "The upload stalled (upload_idle_timeout)",
    413: "A file is too large for the server or workspace (details.limit_bytes), too many "
    "files, or (Expect: 100-continue) a Content-Length over any possible upload",
    415: "Content-Encoding sent, the content contradicts its declared image type, or the "
    "workspace does not accept its sniffed type (type_not_allowed)",
    422: "Invalid fields, no file, or several workspaces and none named",
    507: "A storage quota has no room (quota_exceeded: details.quota, bytes_used, bytes_allowed)",
}
_DOWNLOAD_RESPONSES = {
    200: "The file",
    206: "The one byte range asked for (several ranges: the whole file, 200)",
    304: "Not modified (If-None-Match)",
    404: "No such file readable by me (and no thumbnail, for thumbnails)",
    416: "The range starts past the end (Content-Range: bytes */size)",
}
_ATTACHMENT_ID: dict[str, Any] = {"type": "string", "pattern": "^[A-Za-z0-9_-]{22}$"}

ROUTES: tuple[Route, ...] = (
    Route(
        "POST",
        "/api/upload",
        upload_files,
        "Upload files (multipart/form-data, or a raw body)",
        "files",
        query=UploadQuery,
        request_content=UPLOAD_CONTENT,
        responses=_UPLOAD_RESPONSES,
        expect=refuse_upload_early,
        schemas={201: Uploaded},
    ),
    Route(
        "PUT",
        "/api/upload",
        put_file,
        "Upload one file as the raw body (curl -T)",
        "files",
        query=UploadQuery,
        request_content=UPLOAD_CONTENT,
        responses=_UPLOAD_RESPONSES,
        expect=refuse_upload_early,
        schemas={201: Uploaded},
    ),
    Route(
        "GET",
        "/api/files/{attachment_id}/{filename}",
        download_file,
        "Download a file (Range, If-None-Match; the name in the URL is cosmetic)",
        "files",
        responses=_DOWNLOAD_RESPONSES,
        content_type="*/*",  # the file's own type
        path_params={
            "attachment_id": _ATTACHMENT_ID,
            "filename": {"type": "string", "description": "Any name; headers use the stored one"},
        },
        allow_head=True,
    ),
    Route(
        "GET",
        "/api/thumbnails/{attachment_id}",
        download_thumbnail,
        "An image's thumbnail (WebP, at most 400 px a side)",
        "files",
        responses={k: v for k, v in _DOWNLOAD_RESPONSES.items() if k not in (206, 416)},
        content_type="image/webp",
        path_params={"attachment_id": _ATTACHMENT_ID},
        allow_head=True,
    ),
)
