"""THE filename sanitiser: every path that accepts a client's file name goes through here.

A sanitised name is only ever shown (JSON, ``Content-Disposition``, the cosmetic part of
a download URL); it never becomes part of a storage key or a filesystem path. The rules
protect the people who see the name and the machines it is saved on:

- NFC, so one name has one spelling (and one byte sequence in headers and the database);
- no control, format (bidi overrides, zero-width, BOM, soft hyphen), surrogate,
  private-use or unassigned characters: ``\\u202egnp.exe`` must not display as ``exe.png``;
- only the last path component, and none of ``<>:"/\\|?*`` (invalid on Windows, where
  people save downloads);
- no leading dot (hidden file), hyphen (read as an option by command lines) or space,
  no trailing dot or space (Windows drops them), no bare Windows device name (``CON``);
- at most 100 characters, keeping a short extension when the stem is cut;
- never empty: ``file``, plus the extension when there is one.

``sanitize_filename`` is idempotent. ``pathvalidate`` was considered: it keeps bidi
overrides and can return an empty name, so wrapping it would leave little of it in use.
"""

from __future__ import annotations

import re
import unicodedata

MAX_FILENAME_LENGTH = 100
FALLBACK_STEM = "file"
# Longest extension kept whole when a long name is cut (".numbers", ".gpkg", ".tar.gz"
# keeps ".gz"); anything longer is just part of the name.
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
    """NFC, without dropped characters; other spaces become plain spaces."""
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
    """A safe display name for ``name`` (see the module docstring); idempotent."""
    text = _clean(name or "")
    # The last path component: browsers send a bare name, but old ones and scripts send
    # "C:\\fakepath\\x.png" or "../../etc/passwd".
    text = _SEPARATORS.split(text.rstrip("/\\ "))[-1]
    stem, extension = split_extension(text.strip().rstrip(_TRAILING))
    stem = stem.lstrip(_LEADING)  # ".png" keeps its extension: "file.png"
    limit = MAX_FILENAME_LENGTH - len(extension)
    if len(stem) > limit:
        # A cut can end in a lone base character of a longer sequence: recompose. Only the
        # end of the whole name needs the trailing rule (Windows drops dots and spaces).
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
