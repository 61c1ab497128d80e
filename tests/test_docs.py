"""The README and docs/ link only to files that exist (screenshots included)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# [text](target) and ![alt](target), relative targets only (not URLs or #anchors).
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s#]+)(?:#[^)]*)?\)")


def local_targets(document: Path) -> list[str]:
    found = LINK.findall(document.read_text(encoding="utf-8"))
    return [t for t in found if not re.match(r"^[a-z][a-z0-9+.-]*:", t)]


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.name)
def test_every_relative_link_names_a_file_that_exists(document: Path) -> None:
    missing = [t for t in local_targets(document) if not (document.parent / t).exists()]
    assert missing == [], f"{document.name} links to missing files: {missing}"


def test_the_readme_shows_the_client() -> None:
    shown = [t for t in local_targets(ROOT / "README.md") if t.endswith(".png")]
    assert "docs/screenshots/chat-view.png" in shown
    for picture in shown:
        assert (ROOT / picture).read_bytes().startswith(b"\x89PNG\r\n\x1a\n"), picture
