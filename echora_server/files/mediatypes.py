"""What an uploaded file is, decided from its bytes, and how it may be served.

Only the detected type (magic bytes, or ``text/plain`` for UTF-8 not opening with ``<``, so SVG,
HTML and XML stay unknown) can make a download inline, from an allow-list. A declared image type
the bytes contradict is refused; audio/video labels vary too much to check. Dangerous types and
names are stored but never inline, even as a valid image (a PNG/HTML polyglot named x.html)."""

from __future__ import annotations

import codecs
import functools
import mimetypes
import re
from dataclasses import dataclass
from typing import Literal

import filetype

from echora_server.core.errors import ApiError
from echora_server.files.filenames import split_extension

OCTET_STREAM = "application/octet-stream"
TEXT_PLAIN = "text/plain"
# filetype looks at no more than the first 8 KiB.
SNIFF_BYTES = 8192

# Shown inline (images rendered, media played) when the bytes are of these types.
INLINE_TYPES: frozenset[str] = frozenset(
    {
        "image/png",
        "image/apng",
        "image/jpeg",
        "image/gif",
        "image/webp",
        "audio/mpeg",
        "audio/ogg",
        "audio/x-wav",
        "video/mp4",
        "video/webm",
    }
)
# The only formats ever decoded (dimensions, thumbnails).
RASTER_TYPES: frozenset[str] = frozenset(
    {"image/png", "image/apng", "image/jpeg", "image/gif", "image/webp"}
)

DANGEROUS_TYPES: frozenset[str] = frozenset(
    {
        "text/html",
        "application/xhtml+xml",
        "image/svg+xml",
        "text/xml",
        "application/xml",
        "text/xsl",
        "text/javascript",
        "application/javascript",
        "application/ecmascript",
        "application/x-javascript",
        "application/wasm",
        "application/x-msdownload",
        "application/vnd.microsoft.portable-executable",
        "application/x-executable",
        "application/x-msi",
        "application/x-ms-installer",
        "application/x-sh",
        "application/x-shellscript",
        "application/java-archive",
        "application/hta",
        "application/pdf",  # PDFs run scripts in some viewers; never inline
    }
)
DANGEROUS_EXTENSIONS: frozenset[str] = frozenset(
    {
        *(".html", ".htm", ".xhtml", ".shtml", ".mht", ".mhtml", ".svg", ".svgz", ".xml"),
        *(".xsl", ".xslt", ".js", ".mjs", ".cjs", ".wasm", ".swf", ".pdf"),
        *(".exe", ".dll", ".com", ".scr", ".pif", ".cpl", ".msi", ".msc", ".msp", ".bat"),
        *(".cmd", ".ps1", ".psm1", ".vbs", ".vbe", ".jse", ".wsf", ".wsh", ".hta", ".jar"),
        *(".lnk", ".reg", ".url", ".scf", ".sh", ".app", ".desktop", ".appimage", ".deb"),
    }
)

# Declared-type spellings clients use for the types filetype reports.
_ALIASES = {
    "image/jpg": "image/jpeg",
    "image/pjpeg": "image/jpeg",
    "image/x-png": "image/png",
    "audio/wav": "audio/x-wav",
    "audio/wave": "audio/x-wav",
    "audio/vnd.wave": "audio/x-wav",
    "audio/mp3": "audio/mpeg",
    "image/vnd.microsoft.icon": "image/x-icon",
    "image/x-ms-bmp": "image/bmp",
    "image/tif": "image/tiff",
    "image/heif": "image/heic",
}
# Declared types that say nothing about the file.
_UNINFORMATIVE = frozenset(
    {OCTET_STREAM, "application/x-www-form-urlencoded", "binary/octet-stream"}
)
_TOKEN = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}")
# Image types filetype recognises: declaring one of these promises bytes it can check.
_CHECKABLE_IMAGES = frozenset(m.mime for m in filetype.image_matchers)
_TEXT_CONTROLS_ALLOWED = frozenset("\t\n\r\f")
# Python's built-in table only, not the host's /etc/mime.types: the same answer everywhere.
_EXTENSIONS = mimetypes.MimeTypes()


class TypeMismatch(ApiError):
    status = 415
    code = "type_mismatch"
    message = "The file's content does not match its declared type."


@dataclass(frozen=True, slots=True)
class MediaType:
    declared: str  # normalised; what the client said (stored as declared_type)
    detected: str | None  # from the bytes (stored as detected_type)

    @property
    def mime_type(self) -> str:
        return self.detected or OCTET_STREAM


def normalize_declared(value: str | None) -> str:
    """``"Image/PNG; charset=x"`` -> ``"image/png"``; missing or malformed -> octet-stream."""
    if not value:
        return OCTET_STREAM
    essence = value.split(";", 1)[0].strip().lower()
    if not _TOKEN.fullmatch(essence):
        return OCTET_STREAM
    return _ALIASES.get(essence, essence)


def detect_type(head: bytes) -> str | None:
    """Pass at least ``SNIFF_BYTES`` when the file has them."""
    if not head:
        return None
    found = filetype.guess_mime(head[:SNIFF_BYTES])
    if found and found != OCTET_STREAM:
        return str(found)
    return TEXT_PLAIN if _is_plain_text(head) else None


def _is_plain_text(head: bytes) -> bool:
    try:
        # Not final: the head may end inside a multi-byte character.
        text = codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return False
    if any((ch < " " and ch not in _TEXT_CONTROLS_ALLOWED) or ch == "\x7f" for ch in text):
        return False
    stripped = text.lstrip("\ufeff \t\r\n\f")
    return bool(stripped) and not stripped.startswith("<")


def type_from_name(filename: str) -> str | None:
    """What the extension says, or None when it says nothing known."""
    return _type_of_extension(split_extension(filename)[1].lower())


@functools.lru_cache(maxsize=256)
def _type_of_extension(extension: str) -> str | None:
    # A fixed table (above): one answer per extension, asked for twice per upload.
    guessed, _ = _EXTENSIONS.guess_type(f"x{extension}", strict=False)
    return _ALIASES.get(guessed, guessed) if guessed else None


def expected_type(declared: str, filename: str) -> str:
    if declared not in _UNINFORMATIVE:
        return declared
    return type_from_name(filename) or OCTET_STREAM


def _same(expected: str, detected: str) -> bool:
    pngs = {"image/png", "image/apng"}
    return expected == detected or {expected, detected} <= pngs


def check_declared(declared: str, filename: str, detected: str | None) -> None:
    """Raise TypeMismatch if the bytes contradict the image type declared (or implied by name)."""
    expected = expected_type(declared, filename)
    if not expected.startswith("image/"):
        return
    magic = detected if detected != TEXT_PLAIN else None
    if magic is not None and not _same(expected, magic):
        raise TypeMismatch(details={"declared": expected, "detected": magic})
    if magic is None and expected in _CHECKABLE_IMAGES | {"image/apng"}:
        raise TypeMismatch(details={"declared": expected, "detected": detected})


def classify(declared: str | None, filename: str, head: bytes) -> MediaType:
    normalized = normalize_declared(declared)
    detected = detect_type(head)
    check_declared(normalized, filename, detected)
    return MediaType(normalized, detected)


def is_dangerous(declared: str, filename: str) -> bool:
    extension = split_extension(filename)[1].lower()
    return normalize_declared(declared) in DANGEROUS_TYPES or extension in DANGEROUS_EXTENSIONS


def disposition(
    detected: str | None, declared: str, filename: str
) -> Literal["inline", "attachment"]:
    if detected in INLINE_TYPES and not is_dangerous(declared, filename):
        return "inline"
    return "attachment"


def served_type(detected: str | None) -> str:
    if detected in INLINE_TYPES:
        return detected
    if detected == TEXT_PLAIN:
        return "text/plain; charset=utf-8"
    return OCTET_STREAM
