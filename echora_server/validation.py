"""Request parsing: malformed JSON and invalid data are kept apart, with field details."""

from __future__ import annotations

import json
from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, ValidationError

from echora_server.errors import InvalidJson, InvalidRequest, NotFound

T = TypeVar("T", bound=BaseModel)

MAX_ID = 2**63 - 1


class Body(BaseModel):
    """Base for request bodies: unknown fields are refused rather than silently dropped."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, frozen=True)


def _details(exc: ValidationError) -> list[dict[str, str]]:
    return [
        {"field": ".".join(str(p) for p in err["loc"]) or "(body)", "problem": err["msg"]}
        for err in exc.errors(include_url=False, include_input=False)
    ]


async def read_json(request: web.Request, model: type[T]) -> T:
    if request.content_type != "application/json":
        raise InvalidRequest(
            "Send the body as application/json.", code="unsupported_media_type"
        ).with_status(415)
    raw = await request.read()
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise InvalidJson() from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidRequest(details=_details(exc)) from None


def path_id(request: web.Request, name: str, what: str = "Not found.") -> int:
    """An integer id from the path; anything else is simply not found."""
    raw = request.match_info[name]
    if not raw.isdigit() or int(raw) > MAX_ID:
        raise NotFound(what)
    return int(raw)
