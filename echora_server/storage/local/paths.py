"""The local path jail's second wall, after ``check_key``: no symlink leads out of the root."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from echora_server.storage.base import check_key


def jailed_path(real_root: Path, key: str) -> Path:
    """Call it in a worker thread (it touches the disk); ValueError for a key that escapes."""
    path = real_root / check_key(key)
    # The key pattern already forbids "..": this catches symlinks leading out.
    if not Path(os.path.realpath(path)).is_relative_to(real_root):
        raise ValueError(f"storage key escapes the root: {key!r}")
    return path


def modified_at(st: os.stat_result) -> dt.datetime:
    return dt.datetime.fromtimestamp(st.st_mtime, dt.UTC)


def scan_directory(root: Path, rel_dir: str) -> list[tuple[str, os.stat_result | None]]:
    """Sorted (key, stat or None for a subdirectory); symlinks and non-key names are skipped."""
    found: list[tuple[str, os.stat_result | None]] = []
    directory = root / rel_dir if rel_dir else root
    if os.path.realpath(directory) != str(directory):
        return found  # a symlink on the way (list("link/")): outside the jail
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
                try:
                    check_key(rel)
                except ValueError:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    found.append((rel, None))
                elif entry.is_file(follow_symlinks=False):
                    found.append((rel, entry.stat(follow_symlinks=False)))
    except (FileNotFoundError, NotADirectoryError):
        pass
    found.sort(key=lambda item: item[0])
    return found
