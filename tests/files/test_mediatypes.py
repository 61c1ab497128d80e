"""Type detection from bytes, the declared-type policy, and what may ever be inline."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from echora_server.files.images import read_dimensions
from echora_server.files.mediatypes import (
    OCTET_STREAM,
    TypeMismatch,
    classify,
    detect_type,
    disposition,
    normalize_declared,
    served_type,
)


def image(fmt: str, size: tuple[int, int] = (12, 7)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (1, 2, 3)).save(out, fmt)
    return out.getvalue()


PNG, JPEG, GIF, WEBP = image("PNG"), image("JPEG"), image("GIF"), image("WEBP")
HTML = b"<!DOCTYPE html><html><script>alert(1)</script></html>"
SVG = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>'
PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n"
EXE = b"MZ\x90\x00" + b"\x00" * 60


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (PNG, "image/png"),
        (JPEG, "image/jpeg"),
        (GIF, "image/gif"),
        (WEBP, "image/webp"),
        (PDF, "application/pdf"),
        (b"plain text, nothing more\n", "text/plain"),
        ("naïve café".encode()[:-1], "text/plain"),  # cut inside a character
        (HTML, None),
        (SVG, None),
        (b"  \n<div>markup</div>", None),
        (b"binary\x00\x01\x02", None),
        (b"\xff\xfe\xfd not utf-8", None),
        (b"", None),
    ],
)
def test_detect_type(data: bytes, expected: str | None) -> None:
    assert detect_type(data) == expected


@pytest.mark.parametrize(
    ("declared", "filename", "data"),
    [
        ("image/png", "x.png", HTML),  # an HTML page labelled as a picture
        ("image/png", "x.png", JPEG),  # another image than declared
        ("image/jpeg", "x.jpg", b"just text"),
        ("image/gif", "x.gif", EXE),
        (None, "cat.png", HTML),  # nothing declared: the extension stands in
        ("application/octet-stream", "cat.webp", PNG),
        ("application/x-www-form-urlencoded", "cat.jpg", SVG),  # curl --data-binary
        ("image/svg+xml", "x.svg", PNG),  # an SVG that is really something else
    ],
)
def test_declared_images_must_match(declared: str | None, filename: str, data: bytes) -> None:
    with pytest.raises(TypeMismatch) as caught:
        classify(declared, filename, data)
    assert caught.value.status == 415 and caught.value.code == "type_mismatch"


@pytest.mark.parametrize(
    ("declared", "filename", "data", "detected"),
    [
        ("image/png", "x.png", PNG, "image/png"),
        ("image/jpg", "x.jpg", JPEG, "image/jpeg"),  # a common alias
        ("image/svg+xml", "logo.svg", SVG, None),  # not checkable, stays unvouched
        ("text/html", "page.html", HTML, None),
        ("text/plain", "notes.png", b"words", "text/plain"),  # the declared type wins
        (None, "photo.png", PNG, "image/png"),
        ("audio/mpeg", "song.mp3", b"not audio", "text/plain"),  # audio is not checked
        ("application/pdf", "x.pdf", PDF, "application/pdf"),
    ],
)
def test_accepted(declared: str | None, filename: str, data: bytes, detected: str | None) -> None:
    assert classify(declared, filename, data).detected == detected


def test_inline_only_for_allow_listed_bytes_and_harmless_names() -> None:
    assert disposition("image/png", "image/png", "a.png") == "inline"
    assert disposition("video/webm", OCTET_STREAM, "clip") == "inline"
    assert disposition(None, "image/svg+xml", "a.svg") == "attachment"
    assert disposition("text/plain", "text/html", "a.html") == "attachment"
    assert disposition("application/pdf", "application/pdf", "a.pdf") == "attachment"
    # A PNG/HTML polyglot passes as an image, but is never rendered under such a name.
    assert disposition("image/png", "image/png", "x.html") == "attachment"
    assert disposition("image/png", "text/html", "x.png") == "attachment"


def test_served_and_declared_types() -> None:
    assert served_type("image/png") == "image/png"
    assert served_type("text/plain") == "text/plain; charset=utf-8"
    assert served_type("application/pdf") == OCTET_STREAM
    assert served_type(None) == OCTET_STREAM
    assert normalize_declared("Image/PNG; charset=binary") == "image/png"
    assert normalize_declared("not a type") == OCTET_STREAM
    assert normalize_declared(None) == OCTET_STREAM


@pytest.mark.parametrize(
    ("data", "mime"),
    [(PNG, "image/png"), (JPEG, "image/jpeg"), (GIF, "image/gif"), (WEBP, "image/webp")],
)
def test_dimensions_from_headers(data: bytes, mime: str) -> None:
    assert read_dimensions(data, mime) == (12, 7)
    assert read_dimensions(data[:10], mime) is None  # header not among the bytes
    assert read_dimensions(HTML, mime) is None
