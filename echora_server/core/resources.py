"""The shipped ``sql/`` and ``static/`` dirs: beside the package in a checkout, inside a wheel."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent.parent


def _locate(name: str) -> Path:
    for candidate in (_PACKAGE / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"the {name}/ directory is missing from this installation")


def sql_dir() -> Path:
    return _locate("sql")


def static_dir() -> Path:
    return _locate("static")
