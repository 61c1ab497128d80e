"""THE filename sanitiser for every client-given name. The result is only ever shown, never
part of a storage key or path. NFC; no control, format (a bidi override makes
``\\u202egnp.exe`` read ``exe.png``), private-use or unassigned characters; the last path
component, without ``<>:"/\\|?*`` (Windows); no leading dot, hyphen (an option to shells) or
space, no trailing dot or space, no device name (``CON``); at most 100 characters, keeping a
short extension; never empty. Idempotent. (``pathvalidate`` keeps bidi overrides.)"""

from __future__ import annotations

import re
import unicodedata

MAX_FILENAME_LENGTH = 100
FALLBACK_STEM = "file"
# Longest extension kept whole when a long name is cut (".tar.gz" keeps ".gz").
MAX_EXTENSION_LENGTH = 16

# Control, format, surrogate, private use, unassigned, and the line/paragraph separators.
_DROPPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_REPLACED = frozenset('<>:"|?*')
_SEPARATORS = re.compile(r"[/\\]")
_LEADING = ".- "
_TRAILING = ". "
_EXTENSION = re.compile(rf"\.[^\W_]{{1,{MAX_EXTENSION_LENGTH - 1}}}\Z")
_WINDOWS_DEVICES = frozenset(
    {"con", "prn", "aux", "nul"}
    | {f"com{i}" for i in range(10)}
    | {f"lpt{i}" for i in range(10)}
    | {"com¹", "com²", "com³", "lpt¹", "lpt²", "lpt³"}
)


def _clean(text: str) -> str:
    kept = []
    for ch in unicodedata.normalize("NFC", text):
        category = unicodedata.category(ch)
        if category in _DROPPED_CATEGORIES:
            continue
        if ch in _REPLACED:
            kept.append("_")
        elif category == "Zs":
            kept.append(" ")
        else:
            kept.append(ch)
    # Removing a character can bring a base and a combining mark together: compose again.
    return unicodedata.normalize("NFC", "".join(kept))


def split_extension(name: str) -> tuple[str, str]:
    """``("photo", ".jpeg")``, ``("", ".png")``; the extension is ``""`` when there is none."""
    match = _EXTENSION.search(name)
    if match is None:
        return name, ""
    return name[: match.start()], match.group()


def sanitize_filename(name: str | None) -> str:
    text = _clean(name or "")
    # Old browsers and scripts send paths: "C:\\fakepath\\x.png", "../../etc/passwd".
    text = _SEPARATORS.split(text.rstrip("/\\ "))[-1]
    stem, extension = split_extension(text.strip().rstrip(_TRAILING))
    stem = stem.lstrip(_LEADING)  # ".png" keeps its extension: "file.png"
    limit = MAX_FILENAME_LENGTH - len(extension)
    if len(stem) > limit:
        # A cut may split a base from its marks: recompose. Only the end sheds _TRAILING.
        stem = unicodedata.normalize("NFC", stem[:limit])
        if not extension:
            stem = stem.rstrip(_TRAILING)
    if not stem:
        stem = FALLBACK_STEM
    elif stem.split(".")[0].casefold() in _WINDOWS_DEVICES:
        stem = f"_{stem}"[:limit]
        if not extension:
            stem = stem.rstrip(_TRAILING)
    return stem + extension
