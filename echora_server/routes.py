"""The route table: every HTTP route, with what the OpenAPI document says of it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from echora_server import ws
from echora_server.handlers import auth, channels, files, health, members, messages, site
from echora_server.metrics import get_metrics

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class RequestContent:
    """A request body described as OpenAPI media types: ``{"multipart/form-data":
    {"schema": {...}}}``."""

    description: str
    content: dict[str, dict[str, Any]]


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
                    "channel_id": {"type": "integer", "minimum": 1},
                    "workspace_id": {"type": "integer", "minimum": 1},
                    "file": {
                        "type": "array",
                        "items": {"type": "string", "contentMediaType": "application/octet-stream"},
                    },
                },
            },
        },
        "*/*": {"schema": {"type": "string", "contentMediaType": "application/octet-stream"}},
    },
)
ONE_SHOT_CONTENT = RequestContent(
    "JSON (PostMessageBody), or multipart/form-data for a one-shot send: the content and "
    "client_id fields first, then file parts; the files are uploaded into this channel and "
    "attached, all or nothing. No Content-Encoding.",
    {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {
                    "content": {"type": "string", "maxLength": 4000},
                    "client_id": {"type": "string", "minLength": 1, "maxLength": 64},
                    "file": {
                        "type": "array",
                        "maxItems": 10,
                        "items": {"type": "string", "contentMediaType": "application/octet-stream"},
                    },
                },
            },
        },
    },
)
_UPLOAD_RESPONSES = {
    201: "Stored: every file, or none",
    400: "Interrupted or malformed body",
    403: "Not in the channel",
    404: "No such channel or workspace of mine",
    408: "The upload stalled (upload_idle_timeout)",
    413: "A file is too large (details.limit_bytes), or too many files",
    415: "Content-Encoding sent, or the content contradicts its declared image type",
    422: "Invalid fields, no file, or several workspaces and none named",
}
_DOWNLOAD_RESPONSES = {
    200: "The file",
    206: "The one byte range asked for (several ranges: the whole file, 200)",
    304: "Not modified (If-None-Match)",
    404: "No such file readable by me (and no thumbnail, for thumbnails)",
    416: "The range starts past the end (Content-Range: bytes */size)",
}
_ATTACHMENT_ID: dict[str, Any] = {"type": "string", "pattern": "^[A-Za-z0-9_-]{22}$"}


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    body: type[BaseModel] | None = None
    # The query-string model the handler parses; documented as query parameters.
    query: type[BaseModel] | None = None
    # A body that is not a JSON model (file uploads), as OpenAPI media types.
    request_content: RequestContent | None = None
    authenticated: bool = True
    # Status codes and what they mean, beyond the common error responses.
    responses: dict[int, str] = field(default_factory=lambda: {200: "OK"})
    content_type: str = "application/json"
    # Path parameters that are not integer ids, as OpenAPI schemas.
    path_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    # A GET that also answers HEAD (same headers, no body).
    allow_head: bool = False


ROUTES: tuple[Route, ...] = (
    Route("GET", "/healthz", health.healthz, "Liveness", "ops", authenticated=False),
    Route(
        "GET",
        "/readyz",
        health.readyz,
        "Readiness: database, migrations, storage",
        "ops",
        authenticated=False,
        responses={200: "Ready", 503: "A dependency is down"},
    ),
    Route(
        "GET",
        "/metrics",
        get_metrics,
        "Prometheus metrics",
        "ops",
        authenticated=False,
        content_type="text/plain",
    ),
    Route(
        "GET",
        "/api/openapi.json",
        site.openapi_document,
        "This OpenAPI document",
        "ops",
        authenticated=False,
    ),
    Route(
        "POST",
        "/api/auth/login",
        auth.login,
        "Log in with a password (sets the session cookie)",
        "auth",
        body=auth.LoginBody,
        authenticated=False,
        responses={200: "Logged in", 401: "Wrong username or password", 429: "Too many attempts"},
    ),
    Route(
        "POST",
        "/api/auth/logout",
        auth.logout,
        "Log out (ends the session)",
        "auth",
        authenticated=False,
    ),
    Route(
        "POST",
        "/api/tokens",
        auth.create_token,
        "Create an API token (logged in, or with username and password)",
        "auth",
        body=auth.TokenBody,
        authenticated=False,
        responses={201: "The token; its secret is shown only here", 401: "Not authenticated"},
    ),
    Route("GET", "/api/tokens", auth.list_tokens, "List my API tokens", "auth"),
    Route(
        "DELETE",
        "/api/tokens/{token_id}",
        auth.revoke_token,
        "Revoke one of my API tokens",
        "auth",
        responses={204: "Revoked", 404: "No such token of mine"},
    ),
    Route("GET", "/api/me", members.get_me, "Who am I, and my workspaces", "workspaces"),
    Route(
        "GET",
        "/api/workspaces/{workspace_id}/members",
        members.list_members,
        "List a workspace's members",
        "workspaces",
        responses={200: "OK", 404: "Not a member"},
    ),
    Route(
        "POST",
        "/api/workspaces/{workspace_id}/members",
        members.add_member,
        "Add a user to a workspace (owners and admins)",
        "workspaces",
        body=members.AddMemberBody,
        responses={201: "Added", 403: "Not an owner or admin", 404: "No such workspace or user"},
    ),
    Route(
        "DELETE",
        "/api/workspaces/{workspace_id}/members/{user_id}",
        members.remove_member,
        "Remove a member (owners and admins; anyone may leave)",
        "workspaces",
        responses={204: "Removed", 403: "Not allowed", 404: "No such member", 409: "Last owner"},
    ),
    Route(
        "POST",
        "/api/channels",
        channels.create_channel,
        "Create a channel (the creator joins it)",
        "channels",
        body=channels.CreateChannelBody,
        responses={
            201: "Created",
            404: "No such workspace of mine",
            409: "A channel of that name exists (names ignore case)",
        },
    ),
    Route(
        "GET",
        "/api/channels",
        channels.list_channels,
        "List a workspace's public channels and my private ones",
        "channels",
        query=channels.ChannelsQuery,
        responses={200: "OK", 404: "No such workspace of mine", 422: "Invalid query"},
    ),
    Route(
        "GET",
        "/api/channels/{channel_id}",
        channels.get_channel,
        "A channel, and whether I am in it",
        "channels",
        responses={200: "OK", 404: "No such channel visible to me"},
    ),
    Route(
        "POST",
        "/api/channels/{channel_id}/join",
        channels.join_channel,
        "Join a public channel",
        "channels",
        responses={200: "Joined (or already in it)", 404: "No such channel visible to me"},
    ),
    Route(
        "POST",
        "/api/channels/{channel_id}/leave",
        channels.leave_channel,
        "Leave a channel",
        "channels",
        responses={204: "Left (or was not in it)", 404: "No such channel visible to me"},
    ),
    Route(
        "GET",
        "/api/channels/{channel_id}/members",
        channels.list_channel_members,
        "List a channel's members",
        "channels",
        responses={200: "OK", 404: "No such channel visible to me"},
    ),
    Route(
        "POST",
        "/api/channels/{channel_id}/members",
        channels.add_channel_member,
        "Add a workspace member to a channel I am in",
        "channels",
        body=channels.AddChannelMemberBody,
        responses={
            201: "Added",
            200: "Already a member",
            403: "I am not in the channel",
            404: "No such channel visible to me, or no such member of the workspace",
        },
    ),
    Route(
        "DELETE",
        "/api/channels/{channel_id}/members/{user_id}",
        channels.remove_channel_member,
        "Remove a member from a channel (owners and admins; anyone may remove themselves)",
        "channels",
        responses={
            204: "Removed",
            403: "Not allowed",
            404: "No such channel visible to me, or no such member",
        },
    ),
    Route(
        "POST",
        "/api/channels/{channel_id}/messages",
        messages.post_message,
        "Post a message with my uploads and links (idempotent per client_id); or, as "
        "multipart/form-data, upload files and post them in one request",
        "messages",
        body=messages.PostMessageBody,
        request_content=ONE_SHOT_CONTENT,
        responses={
            201: "Posted",
            200: "Posted before with this client_id: the same message",
            403: "I am not in the channel",
            404: "No such channel visible to me",
            408: "Multipart: the upload stalled (upload_idle_timeout)",
            409: "An attachment of mine is already in a message (attachment_already_linked)",
            413: "Multipart: a file is too large, or too many files",
            415: "Neither JSON nor multipart, or a file contradicts its declared image type",
            422: "Invalid fields, or an attachment that is not mine, not in this workspace or "
            "channel, or missing: all answer attachment_unavailable",
            429: "Sending too fast (Retry-After)",
        },
    ),
    Route(
        "GET",
        "/api/channels/{channel_id}/messages",
        messages.list_messages,
        "A page of history: newest first (before / latest), oldest first (after)",
        "messages",
        query=messages.MessagesQuery,
        responses={200: "OK", 404: "No such channel visible to me", 422: "Invalid query"},
    ),
    Route(
        "PATCH",
        "/api/messages/{message_id}",
        messages.edit_message,
        "Edit my message",
        "messages",
        body=messages.EditMessageBody,
        responses={
            200: "Edited",
            403: "Not the author",
            404: "No such message visible to me",
            429: "Sending too fast (Retry-After)",
        },
    ),
    Route(
        "DELETE",
        "/api/messages/{message_id}",
        messages.delete_message,
        "Delete a message (its author, or workspace owners and admins)",
        "messages",
        responses={204: "Deleted", 403: "Not allowed", 404: "No such message visible to me"},
    ),
    Route(
        "GET",
        "/api/ws",
        ws.websocket,
        "WebSocket: live events, message.send, resume (see the ws module for the protocol)",
        "messages",
        responses={
            101: "Switching protocols",
            401: "Not authenticated",
            403: "Cookie login from an origin that is not allowed",
        },
    ),
    Route(
        "POST",
        "/api/upload",
        files.upload_files,
        "Upload files (multipart/form-data, or a raw body)",
        "files",
        query=files.UploadQuery,
        request_content=UPLOAD_CONTENT,
        responses=_UPLOAD_RESPONSES,
    ),
    Route(
        "PUT",
        "/api/upload",
        files.put_file,
        "Upload one file as the raw body (curl -T)",
        "files",
        query=files.UploadQuery,
        request_content=UPLOAD_CONTENT,
        responses=_UPLOAD_RESPONSES,
    ),
    Route(
        "GET",
        "/api/files/{attachment_id}/{filename}",
        files.download_file,
        "Download a file (Range, If-None-Match; the name in the URL is cosmetic)",
        "files",
        responses=_DOWNLOAD_RESPONSES,
        content_type="application/octet-stream",
        path_params={
            "attachment_id": _ATTACHMENT_ID,
            "filename": {"type": "string", "description": "Any name; headers use the stored one"},
        },
        allow_head=True,
    ),
    Route(
        "GET",
        "/api/thumbnails/{attachment_id}",
        files.download_thumbnail,
        "An image's thumbnail (WebP, at most 400 px a side)",
        "files",
        responses={k: v for k, v in _DOWNLOAD_RESPONSES.items() if k not in (206, 416)},
        content_type="image/webp",
        path_params={"attachment_id": _ATTACHMENT_ID},
        allow_head=True,
    ),
    Route(
        "GET",
        "/",
        site.index,
        "The browser client",
        "client",
        authenticated=False,
        content_type="text/html",
    ),
)

STATIC_PREFIX = "/static"


def add_routes(app: web.Application) -> None:
    for route in ROUTES:
        if route.allow_head:
            app.router.add_get(route.path, route.handler, allow_head=True)
        else:
            app.router.add_route(route.method, route.path, route.handler)
    app.router.add_static(STATIC_PREFIX, site.static_root(), append_version=True)
