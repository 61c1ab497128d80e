"""Range, entity-tag and Content-Disposition fields, without a server."""

from __future__ import annotations

import email.message
import email.utils

import pytest
from hypothesis import given
from hypothesis import strategies as st

from echora_server.files.httpfields import (
    ByteRange,
    UnsatisfiableRange,
    content_disposition,
    if_range_allows,
    none_match,
    parse_range,
)

ETAG = '"0123abcd"'


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-0", ByteRange(0, 0)),
        ("bytes=10-19", ByteRange(10, 19)),
        ("bytes=90-", ByteRange(90, 99)),
        ("bytes=90-1000", ByteRange(90, 99)),
        ("bytes=-10", ByteRange(90, 99)),
        ("bytes=-1000", ByteRange(0, 99)),
        ("Bytes=1-2", ByteRange(1, 2)),
        (" bytes=1-2 ", ByteRange(1, 2)),
        # Ignored: the whole representation.
        ("bytes=0-1,3-4", None),
        ("bytes=0-1,", None),
        ("items=0-1", None),
        ("bytes=", None),
        ("bytes=-", None),
        ("bytes=5-2", None),
        ("bytes=a-b", None),
        ("bytes=1-2-3", None),
        ("bytes 1-2", None),
        ("bytes=" + "9" * 19 + "-", None),
    ],
)
def test_parse_range(header: str | None, expected: ByteRange | None) -> None:
    assert parse_range(header, 100) == expected


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=100-200", "bytes=-0", "bytes=1000-"])
def test_unsatisfiable_ranges(header: str) -> None:
    with pytest.raises(UnsatisfiableRange):
        parse_range(header, 100)


def test_ranges_of_an_empty_representation_are_ignored() -> None:
    for header in ("bytes=0-", "bytes=-5", "bytes=0-0", "bytes=10-"):
        assert parse_range(header, 0) is None


@given(st.integers(1, 10**12), st.integers(0, 10**13), st.integers(0, 10**13))
def test_a_satisfied_range_lies_within_the_representation(size: int, a: int, b: int) -> None:
    for header in (f"bytes={a}-{b}", f"bytes={a}-", f"bytes=-{b}"):
        try:
            found = parse_range(header, size)
        except UnsatisfiableRange:
            continue
        if found is not None:
            assert 0 <= found.start <= found.end < size
            assert found.length == found.end - found.start + 1
            assert found.content_range(size) == f"bytes {found.start}-{found.end}/{size}"


def test_if_none_match_uses_weak_comparison() -> None:
    assert none_match(ETAG, ETAG)
    assert none_match(f"W/{ETAG}", ETAG)
    assert none_match(f'"x", {ETAG}', ETAG)
    assert none_match(f'"x",W/{ETAG} , "y"', ETAG)
    assert none_match(" * ", ETAG)
    assert not none_match(None, ETAG)
    assert not none_match('"x", W/"y"', ETAG)
    assert not none_match("0123abcd", ETAG)  # unquoted: not an entity tag
    assert not none_match("", ETAG)


def test_if_range_uses_strong_comparison() -> None:
    assert if_range_allows(None, ETAG)
    assert if_range_allows(ETAG, ETAG)
    assert not if_range_allows(f"W/{ETAG}", ETAG)
    assert not if_range_allows('"other"', ETAG)
    assert not if_range_allows("Wed, 21 Oct 2015 07:28:00 GMT", ETAG)


def _parse(value: str) -> tuple[str, str, str]:
    message = email.message.Message()
    message["Content-Disposition"] = value
    params = message.get_params(header="content-disposition")
    assert params is not None
    names = [v for k, v in params[1:] if k == "filename"]
    plain = next(v for v in names if isinstance(v, str))
    extended = next(v for v in names if isinstance(v, tuple))
    return params[0][0], plain, email.utils.collapse_rfc2231_value(extended)


@pytest.mark.parametrize(
    ("name", "fallback"),
    [
        ("report.pdf", "report.pdf"),
        ("Résumé.txt", "Resume.txt"),
        ("日本語.txt", "___.txt"),
        ('a "quoted" name.txt', 'a "quoted" name.txt'),
        ("back\\slash.txt", "back\\slash.txt"),
        ("ctrl\x00\x1f\x7f.txt", "ctrl___.txt"),
        ("it's 100%.txt", "it's 100%.txt"),
        ("full\uff0fwidth.txt", "full_width.txt"),  # no separator from a transliteration
    ],
)
def test_content_disposition_round_trips(name: str, fallback: str) -> None:
    value = content_disposition("attachment", name)
    assert value.isascii() and "\r" not in value and "\n" not in value
    assert _parse(value) == ("attachment", fallback, name)
