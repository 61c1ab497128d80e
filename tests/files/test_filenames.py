"""The one filename sanitiser: properties over arbitrary Unicode, and the classic attacks."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from echora_server.files.filenames import (
    FALLBACK_STEM,
    MAX_FILENAME_LENGTH,
    sanitize_filename,
    split_extension,
)

FORBIDDEN_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}
FORBIDDEN_CHARACTERS = set('/\\<>:"|?*')

# Names people and attackers send: every code point (surrogates included), with path
# separators, dots, bidi controls and extensions mixed in often enough to matter.
tricky = st.sampled_from(
    ["/", "\\", ".", "-", " ", "..", "\u202e", "\u200b", "\ufeff", "\u0301", ".png", "\x00"]
)
names = st.lists(st.one_of(st.characters(), tricky), max_size=160).map("".join)
extensions = st.text(st.characters(categories=["Ll", "Lu", "Nd"]), min_size=1, max_size=10).map(
    lambda ext: f".{ext}"
)

ATTACKS = [
    "../../etc/passwd",
    "\u202egnp.exe",
    "a" * 300,
    "x" * 300 + ".png",
    ".htaccess",
    "-rf --no-preserve-root",
    "CON",
    "nul.txt",
    "C:\\fakepath\\photo.jpg",
    "\u200b\u200c\u200d",
    "e\u0301\u200b\u0301.txt",
    "name\r\nSet-Cookie: x=1",
    "",
    "   ",
    "...",
]


@settings(max_examples=400, deadline=None)
@given(names)
@example("a" * 99 + ". .x")
@example("con." + "x" * 120)
def test_properties(name: str) -> None:
    clean = sanitize_filename(name)
    assert clean, "never empty"
    assert sanitize_filename(clean) == clean, "idempotent"
    assert len(clean) <= MAX_FILENAME_LENGTH
    assert unicodedata.normalize("NFC", clean) == clean
    assert not clean.startswith((".", "-", " "))
    assert not clean.endswith((".", " "))
    for ch in clean:
        assert unicodedata.category(ch) not in FORBIDDEN_CATEGORIES, repr(ch)
        assert ch not in FORBIDDEN_CHARACTERS, repr(ch)
    clean.encode("utf-8")  # no lone surrogates: storable and sendable


@settings(max_examples=200, deadline=None)
@given(st.text(st.characters(categories=["L", "N"]), min_size=1, max_size=400), extensions)
def test_extension_kept_when_truncated(stem: str, extension: str) -> None:
    clean = sanitize_filename(stem + extension)
    assert clean.endswith(unicodedata.normalize("NFC", extension))
    assert len(clean) <= MAX_FILENAME_LENGTH


@pytest.mark.parametrize("name", ATTACKS)
def test_attacks_are_defused(name: str) -> None:
    clean = sanitize_filename(name)
    assert sanitize_filename(clean) == clean
    assert "/" not in clean and "\\" not in clean and ".." not in clean.split(".")[0]
    assert "\u202e" not in clean and "\r" not in clean and "\n" not in clean


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("\u202egnp.exe", "gnp.exe"),
        ("C:\\fakepath\\photo.jpg", "photo.jpg"),
        ("CON", "_CON"),
        ("nul.txt", "_nul.txt"),
        (".htaccess", f"{FALLBACK_STEM}.htaccess"),
        ("-rf", "rf"),
        ("\u200b.png", f"{FALLBACK_STEM}.png"),
        ("", FALLBACK_STEM),
        (None, FALLBACK_STEM),
        ("what?<now>.txt", "what__now_.txt"),
        ("e\u0301te\u0301.txt", "\u00e9t\u00e9.txt"),
        ("report.final.PDF", "report.final.PDF"),
        ("x" * 300 + ".png", "x" * 96 + ".png"),
        ("y" * 300, "y" * 100),
    ],
)
def test_examples(name: str | None, expected: str) -> None:
    assert sanitize_filename(name) == expected


def test_split_extension() -> None:
    assert split_extension("photo.jpeg") == ("photo", ".jpeg")
    assert split_extension("archive.tar.gz") == ("archive.tar", ".gz")
    assert split_extension(".png") == ("", ".png")
    assert split_extension("README") == ("README", "")
    assert split_extension("x." + "a" * 40) == ("x." + "a" * 40, "")
