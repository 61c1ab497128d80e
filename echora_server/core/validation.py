"""Request parsing: malformed JSON and invalid data are kept apart, with field details."""

from __future__ import annotations

import json
import unicodedata
from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, ValidationError

from echora_server.core.errors import InvalidJson, InvalidRequest, NotFound

T = TypeVar("T", bound=BaseModel)

MAX_ID = 2**63 - 1


class Body(BaseModel):
    """Base for request bodies: unknown fields are refused rather than silently dropped."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, frozen=True)


class Query(BaseModel):
    """Base for query-string models: unknown parameters are ignored (cache busters)."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True, frozen=True)


def validation_details(exc: ValidationError) -> list[dict[str, str]]:
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
        raise InvalidRequest(details=validation_details(exc)) from None


def path_id(request: web.Request, name: str, what: str = "Not found.") -> int:
    """An integer id from the path; anything else is simply not found."""
    raw = request.match_info[name]
    if not raw.isdigit() or int(raw) > MAX_ID:
        raise NotFound(what)
    return int(raw)


def read_query(request: web.Request, model: type[T]) -> T:
    try:
        return model.model_validate(dict(request.query))
    except ValidationError as exc:
        raise InvalidRequest(details=validation_details(exc)) from None


# Direction overrides and isolates make text render differently from what it says.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_LINE_BREAKS = frozenset("\t\n\r")


def check_text(
    value: str, field: str, *, max_length: int, min_length: int = 0, multiline: bool = False
) -> str:
    """NFC text PostgreSQL can store and a UI can show: no NUL or lone surrogates (valid JSON,
    invalid PostgreSQL text), no other control characters, no direction overrides in names."""

    def problem(text: str) -> InvalidRequest:
        return InvalidRequest(details=[{"field": field, "problem": text}])

    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise problem("contains invalid characters (unpaired surrogates)") from None
    text = unicodedata.normalize("NFC", value)
    if multiline:
        # Bidi controls stay: mixed right-to-left text needs them in a message body.
        refused = any(unicodedata.category(ch) == "Cc" and ch not in _LINE_BREAKS for ch in text)
    else:
        refused = any(unicodedata.category(ch) == "Cc" or ch in _BIDI_CONTROLS for ch in text)
    if refused:
        raise problem("contains control characters")
    if not min_length <= len(text) <= max_length:
        raise problem(f"must be {min_length}-{max_length} characters long")
    return text
