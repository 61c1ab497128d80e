"""What a route is: its handler, and what the OpenAPI document says of it.

Each area's ``ROUTES`` sit beside its handlers (``echora_server/handlers/``);
``echora_server/routes.py`` joins them into the table the app serves and
``echora_server/openapi.py`` describes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class RequestContent:
    """A request body described as OpenAPI media types: ``{"multipart/form-data":
    {"schema": {...}}}``."""

    description: str
    content: dict[str, dict[str, Any]]


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
