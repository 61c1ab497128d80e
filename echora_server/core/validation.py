"""Request parsing: malformed JSON and invalid data are kept apart, with field details."""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, ValidationError

from echora_server.core.errors import InvalidJson, InvalidRequest, NotFound

T = TypeVar("T", bound=BaseModel)

MAX_ID = 2**63 - 1


class Body(BaseModel):
    """Base for request bodies: unknown fields are refused rather than silently dropped, and
    JSON types are not coerced (``"1"`` is no integer, ``0`` no boolean)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, frozen=True, strict=True)


class Query(BaseModel):
    """Base for query-string models: unknown parameters are ignored (cache busters)."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True, frozen=True)


def validation_details(exc: ValidationError) -> list[dict[str, str]]:
    return [
        {"field": ".".join(str(p) for p in err["loc"]) or "(body)", "problem": err["msg"]}
        for err in exc.errors(include_url=False, include_input=False)
    ]


def _number(text: str) -> int | float:
    value = float(text)
    # JSON Schema counts 2.0 as an integer: so do the strict models.
    return int(value) if value.is_integer() else value


def loads(raw: str | bytes) -> Any:
    """JSON as the models read it: a number without a fraction is an int."""
    return json.loads(raw, parse_float=_number)


async def read_json(request: web.Request, model: type[T]) -> T:
    if request.content_type != "application/json":
        raise InvalidRequest(
            "Send the body as application/json.", code="unsupported_media_type"
        ).with_status(415)
    raw = await request.read()
    try:
        data = loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise InvalidJson() from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidRequest(details=validation_details(exc)) from None


def path_id(request: web.Request, name: str, what: str = "Not found.") -> int:
    """An integer id from the path; anything else is simply not found."""
    raw = request.match_info[name]
    # ASCII only: isdigit() takes "\u00b2", which int() refuses (a 500), and other scripts.
    if not (raw.isascii() and raw.isdigit()) or int(raw) > MAX_ID:
        raise NotFound(what)
    return int(raw)


def read_query(request: web.Request, model: type[T]) -> T:
    try:
        return model.model_validate(dict(request.query))
    except ValidationError as exc:
        raise InvalidRequest(details=validation_details(exc)) from None


# The character classes of check_text's rules, written once for it and for the document
# (each a JSON Schema pattern: ECMA 262 and Python read them alike).
CONTROLS = r"\x00-\x1f\x7f-\x9f"  # Unicode category Cc, all of it
CONTROLS_BUT_LINE_BREAKS = r"\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f"
# Direction overrides and isolates make text render differently from what it says.
BIDI_CONTROLS = r"\u202a-\u202e\u2066-\u2069"
# What str.strip() removes, less \x1c-\x1f (controls no text may hold).
SPACES = r"\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_LINE_REFUSED = re.compile(f"[{CONTROLS}{BIDI_CONTROLS}]")
_TEXT_REFUSED = re.compile(f"[{CONTROLS_BUT_LINE_BREAKS}]")


def text_pattern(*, multiline: bool = False, blank: bool = True) -> str:
    """check_text's character rule as a pattern; ``blank=False``: not only spaces either."""
    refused = CONTROLS_BUT_LINE_BREAKS if multiline else CONTROLS + BIDI_CONTROLS
    if blank:
        return f"^[^{refused}]*$"
    return f"^[^{refused}]*[^{refused}{SPACES}][^{refused}]*$"


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
    # Bidi controls stay in a message body: mixed right-to-left text needs them.
    if (_TEXT_REFUSED if multiline else _LINE_REFUSED).search(text):
        raise problem("contains control characters")
    if not min_length <= len(text) <= max_length:
        raise problem(f"must be {min_length}-{max_length} characters long")
    return text
