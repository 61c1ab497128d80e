"""``/api/uploads``: ask for an upload ticket, send its bytes, finalize it."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from echora_server.auth.csrf import allowed_origins
from echora_server.auth.identity import bearer_token, require_identity
from echora_server.core.route import RequestContent, Route
from echora_server.core.validation import read_json
from echora_server.files.handlers import FILE_SCHEMA, Uploaded
from echora_server.files.shapes import attachment_json
from echora_server.files.upload_body import TargetFields, UploadBody
from echora_server.tickets.service import TICKETS, TicketRequest
from echora_server.tickets.shapes import (
    CreateTicket,
    FinalizeTicket,
    IssuedTicket,
    Received,
    issued_json,
)


def page_origin(request: web.Request) -> str | None:
    """The web page asking (its Origin), "" for a page of an origin this server does not
    serve (its bytes go through Echora, and the store is never asked about it), None for
    a client that is no page."""
    origin = request.headers.get("Origin")
    if origin is None:
        return None
    return origin if origin in allowed_origins(request) else ""


async def create_upload(request: web.Request) -> web.Response:
    identity = await require_identity(request)
    asked = await read_json(request, CreateTicket)
    issued = await request.app[TICKETS].create(
        identity,
        TicketRequest(
            asked.filename,
            asked.size,
            asked.content_type,
            TargetFields(asked.channel_id, asked.workspace_id),
            bytes.fromhex(asked.sha256) if asked.sha256 else None,
            page_origin(request),
        ),
    )
    return web.json_response(issued_json(issued.ticket, issued.token, issued.direct), status=201)


async def send_upload(request: web.Request) -> web.Response:
    service = request.app[TICKETS]
    reader = UploadBody.raw(request, service.uploads.limits.idle_timeout)
    receipt = await service.receive(request.match_info["upload_id"], bearer_token(request), reader)
    return web.json_response(
        {"id": receipt.ticket_id, "size": receipt.size, "sha256": receipt.sha256.hex()}
    )


async def finalize_upload(request: web.Request) -> web.Response:
    identity = await require_identity(request)
    body = await read_json(request, FinalizeTicket)
    attachment = await request.app[TICKETS].finalize(
        identity, request.match_info["upload_id"], body.token
    )
    return web.json_response({"attachments": [attachment_json(attachment)]}, status=201)


_UPLOAD_ID: dict[str, Any] = {"type": "string", "pattern": "^[A-Za-z0-9_-]{22}$"}

ROUTES: tuple[Route, ...] = (
    Route(
        "POST",
        "/api/uploads",
        create_upload,
        "Ask for an upload ticket: where and how to send one file's bytes",
        "uploads",
        body=CreateTicket,
        responses={
            201: "The ticket; its token is shown only here",
            403: "Not in the channel, or tickets off in the workspace (tickets_disabled)",
            404: "No such channel or workspace of mine",
            413: "Larger than the server's or workspace's limit (details.limit_bytes)",
            415: "A type the workspace refuses, as declared or named (type_not_allowed)",
            422: "Invalid fields, or no content_type and a name that tells none",
            429: "Too many open tickets (Retry-After: when one frees)",
            507: "A quota has no room for the declared size (quota_exceeded)",
        },
        schemas={201: IssuedTicket},
    ),
    Route(
        "PUT",
        "/api/uploads/{upload_id}",
        send_upload,
        "Send a ticket's bytes as the raw body, with the ticket's token as the Bearer token",
        "uploads",
        request_content=RequestContent(
            "The file's bytes, exactly the declared size. No Content-Encoding.",
            {"*/*": {"schema": FILE_SCHEMA}},
            required=False,
        ),
        responses={
            200: "Stored; finalize next",
            400: "Not the declared size (size_mismatch) or SHA-256 (digest_mismatch), or "
            "interrupted",
            401: "No valid upload token",
            404: "No such ticket for this token",
            408: "The upload stalled",
            409: "Sent already, being sent, or finalized",
            410: "The ticket expired before the bytes came",
            415: "Content-Encoding sent, or a type the bytes contradict or the workspace refuses",
        },
        schemas={200: Received},
        path_params={"upload_id": _UPLOAD_ID},
    ),
    Route(
        "POST",
        "/api/uploads/{upload_id}/finalize",
        finalize_upload,
        "Check the stored bytes and create the (unlinked) attachment",
        "uploads",
        body=FinalizeTicket,
        responses={
            201: "The attachment, as POST /api/upload answers",
            401: "Not authenticated, or no valid upload token",
            404: "No such ticket of mine",
            409: "Finalized already, bytes not received yet, or being sent",
            410: "The ticket's finalize window is over",
            415: "The bytes contradict the declared image type, or the workspace does not "
            "accept their type (the object was deleted)",
            422: "The stored object is not the declared size (upload_size_mismatch) or "
            "SHA-256 (upload_digest_mismatch); it was deleted",
        },
        schemas={201: Uploaded},
        path_params={"upload_id": _UPLOAD_ID},
    ),
)
