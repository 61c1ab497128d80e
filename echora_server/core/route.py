"""A route and its OpenAPI description; ``web.route_table`` joins each feature's ``ROUTES``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Raises an ApiError (or a dependency's error) when the headers alone refuse the request.
Check = Callable[[web.Request], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class RequestContent:
    """A body that is not a JSON model, as OpenAPI media types."""

    description: str
    content: dict[str, dict[str, Any]]
    # False where no body at all is a body too (on the wire it is an empty one).
    required: bool = True


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    # aiohttp's pattern; a ``{name:regex}`` is documented as ``{name}``.
    path: str
    handler: Handler
    summary: str
    tag: str
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None  # documented as query parameters
    request_content: RequestContent | None = None
    authenticated: bool = True
    # Status codes and what they mean, beyond the common error responses.
    responses: dict[int, str] = field(default_factory=lambda: {200: "OK"})
    # The JSON body of a status, when it is not the error shape (``core.shapes``).
    schemas: dict[int, type[BaseModel]] = field(default_factory=dict)
    content_type: str = "application/json"
    # Path parameters that are not integer ids, as OpenAPI schemas.
    path_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    allow_head: bool = False
    # For ``Expect: 100-continue``: refuse with the final status before the body is sent.
    expect: Check | None = None
