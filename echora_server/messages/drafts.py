"""A message as clients send it: one model and one set of checks for REST, WebSocket and
one-shot sends, so all three store the same message."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import ConfigDict, Field

from echora_server.core.errors import InvalidRequest
from echora_server.core.validation import (
    BIDI_CONTROLS,
    CONTROLS,
    SPACES,
    Body,
    check_text,
    text_pattern,
)
from echora_server.db.records import Link

MAX_CONTENT = 4000
MAX_CLIENT_ID = 64
MAX_ATTACHMENTS = 10
MAX_LINKS = 10
MAX_URL = 2000
MAX_LINK_TITLE = 200
# Ids are 22 characters; anything up to this length is looked up (and not found).
MAX_ATTACHMENT_ID = 64
# Visible ASCII: client ids are opaque tokens (UUIDs, ULIDs, counters), never shown.
_CLIENT_ID = re.compile(rf"[\x21-\x7e]{{1,{MAX_CLIENT_ID}}}")

AttachmentId = Annotated[str, Field(min_length=1, max_length=MAX_ATTACHMENT_ID)]
CLIENT_ID_PATTERN = f"^{_CLIENT_ID.pattern}$"
# _check_link's rule: http(s), a host, no credentials, no space or control anywhere; nor,
# in the host, a character NFKC turns into a delimiter (urlsplit refuses those, "\uff0f").
_NFKC_DELIMITERS = (
    r"\u2047\u2048\u2049\u2100\u2101\u2105\u2106\u2a74\ufe13\ufe16\ufe55\ufe56\ufe5f\ufe6b"
    r"\uff03\uff0f\uff1a\uff1f\uff20"
)
_NOT_IN_URL = CONTROLS + BIDI_CONTROLS + SPACES
_NOT_IN_HOST = _NOT_IN_URL + _NFKC_DELIMITERS + "/?#@\\[\\]"
URL_PATTERN = (
    f"^[{SPACES}]*[Hh][Tt][Tt][Pp][Ss]?://[^{_NOT_IN_HOST}:][^{_NOT_IN_HOST}]*"
    f"(?:[/?#][^{_NOT_IN_URL}]*)?[{SPACES}]*$"
)


class LinkIn(Body):
    """A link a message carries."""

    url: str = Field(
        max_length=MAX_URL,
        description="An http or https URL",
        json_schema_extra={"pattern": URL_PATTERN},
    )
    title: str = Field("", max_length=MAX_LINK_TITLE, json_schema_extra={"pattern": text_pattern()})


class NewMessage(Body):
    # Whitespace is content (indented code, blank lines): never strip it.
    model_config = ConfigDict(
        str_strip_whitespace=False,
        # Some text, or something else to show.
        json_schema_extra={
            "anyOf": [
                {
                    "required": ["content"],
                    "properties": {
                        "content": {"pattern": text_pattern(multiline=True, blank=False)}
                    },
                },
                {"required": ["attachment_ids"], "properties": {"attachment_ids": {"minItems": 1}}},
                {"required": ["links"], "properties": {"links": {"minItems": 1}}},
            ]
        },
    )

    content: str = Field(
        "",
        max_length=MAX_CONTENT,
        description="May be empty with attachments or links.",
        json_schema_extra={"pattern": text_pattern(multiline=True)},
    )
    client_id: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_CLIENT_ID,
        description="Chosen by the client; a retry with the same value posts nothing new.",
        json_schema_extra={"pattern": CLIENT_ID_PATTERN},
    )
    attachment_ids: list[AttachmentId] = Field(
        default_factory=list,
        max_length=MAX_ATTACHMENTS,
        description="My unlinked uploads (POST /api/upload), in the order to show them.",
        json_schema_extra={"uniqueItems": True},
    )
    links: list[LinkIn] = Field(default_factory=list, max_length=MAX_LINKS)

    def draft(self) -> Draft:
        return check_draft(self.content, self.client_id, self.attachment_ids, self.links)


@dataclass(frozen=True, slots=True)
class Draft:
    """A message checked before anything is written."""

    content: str
    client_id: str | None
    attachment_ids: tuple[str, ...] = ()  # distinct, in the sender's order
    links: tuple[Link, ...] = ()


def _problem(field: str, text: str) -> InvalidRequest:
    return InvalidRequest(details=[{"field": field, "problem": text}])


def check_draft(
    content: str,
    client_id: str | None,
    attachment_ids: Sequence[str] = (),
    links: Sequence[LinkIn] = (),
    *,
    files_follow: bool = False,
) -> Draft:
    """Text may be empty with attachments, links or files still to come (one-shot rechecks)."""
    if len(attachment_ids) > MAX_ATTACHMENTS:
        raise _problem("attachment_ids", f"at most {MAX_ATTACHMENTS}")
    if len(set(attachment_ids)) != len(attachment_ids):
        raise _problem("attachment_ids", "must not repeat an id")
    if len(links) > MAX_LINKS:
        raise _problem("links", f"at most {MAX_LINKS}")
    checked = tuple(_check_link(i, link) for i, link in enumerate(links))
    may_be_empty = bool(attachment_ids or links) or files_follow
    content = check_content(content, may_be_empty=may_be_empty)
    if client_id is not None and not _CLIENT_ID.fullmatch(client_id):
        raise _problem("client_id", f"must be 1-{MAX_CLIENT_ID} visible ASCII characters")
    return Draft(content, client_id, tuple(attachment_ids), checked)


def check_content(content: str, *, may_be_empty: bool) -> str:
    content = check_text(content, "content", max_length=MAX_CONTENT, multiline=True)
    if not may_be_empty and not content.strip():
        raise empty_content()
    return content


def empty_content() -> InvalidRequest:
    return _problem("content", "must not be empty")


def _check_link(index: int, link: LinkIn) -> Link:
    field = f"links.{index}.url"
    url = check_text(link.url, field, max_length=MAX_URL, min_length=1)
    title = check_text(link.title, f"links.{index}.title", max_length=MAX_LINK_TITLE)
    refused = _problem(field, "must be an http(s) URL")
    if any(ch.isspace() for ch in url):
        raise refused
    try:
        split = urlsplit(url)
        host = split.hostname
        # "https://bank.example@evil.example" shows one host and opens another.
        credentials = split.username is not None or split.password is not None
    except ValueError:  # a malformed IPv6 host or port
        raise refused from None
    if split.scheme.lower() not in ("http", "https") or not host or credentials:
        raise refused
    return Link(url, title)
