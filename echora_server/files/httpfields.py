"""HTTP fields of downloads: byte ranges, entity tags (RFC 9110), Content-Disposition (RFC 6266).
A ``Range`` we will not honour (malformed, another unit, several ranges, an empty file) means
"send it all", as RFC 9110 allows: multipart/byteranges would buy our clients nothing."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote

# One ``first-last``, ``first-`` or ``-suffix`` range; over 18 digits is malformed (ignored).
_SINGLE_RANGE = re.compile(r"bytes=(\d{0,18})-(\d{0,18})", re.IGNORECASE)
# The opaque part of each entity tag in a list, weak or strong.
_ENTITY_TAG = re.compile(r'(?:W/)?"([\x21\x23-\x7e\x80-\xff]*)"')
# Only letters and digits: NFKD of a fullwidth solidus must not put "/" in the fallback name.
_ASCII_ALNUM = re.compile(r"[A-Za-z0-9]+")


class UnsatisfiableRange(Exception):
    """The one range asked for selects nothing: answer 416."""


@dataclass(frozen=True, slots=True)
class ByteRange:
    start: int
    end: int  # inclusive, like the header and Storage.open

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end}/{size}"


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The one range to send, or None to send everything."""
    if header is None or size == 0:
        return None
    match = _SINGLE_RANGE.fullmatch(header.strip())
    if match is None:
        return None  # malformed, another unit, or several ranges: ignored
    first, last = match.groups()
    if not first:
        if not last:
            return None  # "bytes=-"
        suffix = int(last)
        if suffix == 0:
            raise UnsatisfiableRange
        return ByteRange(max(0, size - suffix), size - 1)
    start = int(first)
    if last and int(last) < start:
        return None  # invalid syntax (RFC 9110 14.1.1): ignored
    if start >= size:
        raise UnsatisfiableRange
    return ByteRange(start, min(int(last), size - 1) if last else size - 1)


def _opaque_tags(header: str) -> set[str]:
    return set(_ENTITY_TAG.findall(header))


def none_match(header: str | None, etag: str) -> bool:
    """Weak comparison; ``*`` matches (a missing file got its 404 already)."""
    if header is None:
        return False
    if header.strip() == "*":
        return True
    return etag.strip('"') in _opaque_tags(header)


def if_range_allows(header: str | None, etag: str) -> bool:
    """STRONG comparison; a date never matches (we send no ``Last-Modified``)."""
    return header is None or header.strip() == etag


def _ascii_fallback(filename: str) -> str:
    out = []
    for ch in unicodedata.normalize("NFC", filename):
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "/":
            out.append("_")
        elif " " <= ch <= "~":
            out.append(ch)
        else:
            plain = "".join(_ASCII_ALNUM.findall(unicodedata.normalize("NFKD", ch)))
            out.append(plain or "_")
    return "".join(out)


def content_disposition(kind: Literal["inline", "attachment"], filename: str) -> str:
    """ASCII ``filename=`` (read by curl -OJ) plus the exact name as ``filename*`` (RFC 8187).
    Not aiohttp's helper: it percent-encodes ``filename=`` (curl saves ``R%C3%A9sum%C3%A9``)."""
    fallback = _ascii_fallback(filename)
    # quote() with safe="" leaves only RFC 8187 attr-chars unencoded.
    encoded = quote(unicodedata.normalize("NFC", filename), safe="", encoding="utf-8")
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"
