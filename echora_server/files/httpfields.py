"""HTTP fields of file downloads: byte ranges, entity tags, Content-Disposition.

Pure functions (no I/O), after RFC 9110 (ranges, conditional requests) and RFC 6266 with
RFC 8187 (file names). Where RFC 9110 lets a server ignore a ``Range`` it cannot or will
not honour, these functions answer "send the whole representation" rather than an error:
a malformed header, another unit, several ranges (a multipart/byteranges body buys our
clients nothing and costs a second code path) and any range of an empty representation.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote

# One ``first-last``, ``first-`` or ``-suffix`` range. Eighteen digits are more than any
# object we store; a longer number is treated as malformed (ignored) rather than parsed.
_SINGLE_RANGE = re.compile(r"bytes=(\d{0,18})-(\d{0,18})", re.IGNORECASE)
# The opaque part of each entity tag in a list, weak or strong.
_ENTITY_TAG = re.compile(r'(?:W/)?"([\x21\x23-\x7e\x80-\xff]*)"')
# Transliterations kept in the ASCII fallback name: letters and digits only, so a
# decomposition such as fullwidth solidus -> "/" never puts a separator into it.
_ASCII_ALNUM = re.compile(r"[A-Za-z0-9]+")


class UnsatisfiableRange(Exception):
    """The one range asked for starts past the end (answer 416 with ``bytes */size``)."""


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
    """The single byte range to send of a representation of ``size`` bytes, or None to
    send all of it. Raises UnsatisfiableRange for a well-formed range that selects
    nothing (``first`` at or past the end, or ``-0``)."""
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
    """Whether ``If-None-Match`` matches our (strong) ``etag``: weak comparison, lists,
    and ``*`` (the representation exists, or we would have answered 404 already)."""
    if header is None:
        return False
    if header.strip() == "*":
        return True
    return etag.strip('"') in _opaque_tags(header)


def if_range_allows(header: str | None, etag: str) -> bool:
    """Whether a ``Range`` may be honoured under ``If-Range``: absent, or our entity tag
    by STRONG comparison. A date never matches: we send no ``Last-Modified``."""
    return header is None or header.strip() == etag


def _ascii_fallback(filename: str) -> str:
    """The name for clients that only read ``filename=`` (curl -OJ): printable ASCII,
    accents dropped ("é" -> "e"), anything else "_", quotes and backslashes escaped."""
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
    """RFC 6266: an ASCII ``filename="..."`` plus the exact name as ``filename*`` (RFC
    8187, UTF-8, percent-encoded). Never aiohttp's helper, which percent-encodes inside
    the plain ``filename=`` (curl -OJ then saves ``R%C3%A9sum%C3%A9.txt``)."""
    fallback = _ascii_fallback(filename)
    # quote() with safe="" leaves only RFC 8187 attr-chars unencoded.
    encoded = quote(unicodedata.normalize("NFC", filename), safe="", encoding="utf-8")
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"
