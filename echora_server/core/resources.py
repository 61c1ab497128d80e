"""Where the shipped ``sql/`` and ``static/`` directories are.

In a source checkout (and an editable install) they sit beside the package; in a built
wheel they are packaged as ``echora_server/sql`` and ``echora_server/static``.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent.parent


def _locate(name: str) -> Path:
    packaged = _PACKAGE / name
    if packaged.is_dir():
        return packaged
    checkout = _PACKAGE.parent / name
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError(f"the {name}/ directory is missing from this installation")


def sql_dir() -> Path:
    return _locate("sql")


def static_dir() -> Path:
    return _locate("static")
