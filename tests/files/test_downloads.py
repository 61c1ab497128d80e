"""GET/HEAD /api/files/{id}/{name} and /api/thumbnails/{id} on local disk and S3 (SeaweedFS).

Reads go through a spy on ``Storage.open`` so the tests see what storage was asked for
(ranged reads, no read at all for HEAD and 304) and that every reader was closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.message
import email.utils
import hashlib
import io
import json
import os
import random
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import aiohttp
import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestClient
from PIL import Image
from support.backends import behind_proxy, running_app
from support.chat import make_channel, post
from support.faultproxy import FaultProxy
from support.people import PASSWORD, People, Person
from support.seaweed import S3Server

import echora_server.storage.factory
from echora_server.accounts import service as accounts
from echora_server.app import create_app
from echora_server.config import Config
from echora_server.db import workspaces
from echora_server.db.pool import POOL
from echora_server.files import transfer as download_bodies
from echora_server.files.httpfields import content_disposition
from echora_server.files.transfer import SPLICE_MIN_BYTES
from echora_server.storage import splice
from echora_server.storage.base import FileRegion, ObjectReader, SocketBody, Storage
from echora_server.storage.factory import STORAGE
from echora_server.storage.local.storage import LocalStorage
from echora_server.storage.s3.storage import S3Storage

MiB = 1024 * 1024
PART = 5 * MiB  # S3's smallest part: BIG is stored as three parts
BIG = 2 * PART + 123_457
CACHE = "private, max-age=86400, immutable"
CSP = "sandbox; default-src 'none'"
POOL_SIZE = 4  # S3 connections in the disconnect test: leaks show within a few requests


BACKENDS = ("local", "s3")


@pytest.fixture
def config_overrides() -> dict[str, Any]:
    return {"max_upload_bytes": 3 * PART, "s3_part_size": PART}


local_only = pytest.mark.parametrize("config", ["local"], indirect=True)


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def png_bytes() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (640, 480), (30, 120, 200)).save(out, "PNG")
    return out.getvalue()


class _SpyReader:
    def __init__(self, inner: ObjectReader, spy: StorageSpy) -> None:
        self.size, self.length = inner.size, inner.length
        self._inner, self._spy, self._closed = inner, spy, False

    def chunks(self, chunk_size: int = 256 * 1024) -> AsyncIterator[bytes]:
        self._spy.streamed += 1
        return self._inner.chunks(chunk_size)

    def file_region(self) -> FileRegion | None:
        region = self._inner.file_region()
        self._spy.sent_files += region is not None
        return region

    def socket_body(self) -> SocketBody | None:
        return self._inner.socket_body()

    async def close(self) -> None:
        await self._inner.close()
        if not self._closed:
            self._closed = True
            self._spy.unclosed -= 1

    async def __aenter__(self) -> _SpyReader:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class StorageSpy:
    """Records every ``open`` (key, start, end) and counts readers not closed yet, and
    how their bytes went out: read as chunks, or handed over as a file (sendfile) or as
    a socket (splice)."""

    def __init__(self, storage: Storage) -> None:
        self.opened: list[tuple[str, int, int | None]] = []
        self.unclosed = 0
        self.streamed = 0
        self.sent_files = 0
        self.spliced = 0
        self.zero_copy: list[bool] = []  # what each open asked for
        self._open = storage.open

    async def open(
        self, key: str, start: int = 0, end: int | None = None, *, zero_copy: bool = False
    ) -> _SpyReader:
        reader = await self._open(key, start, end, zero_copy=zero_copy)
        self.opened.append((key, start, end))
        self.zero_copy.append(zero_copy)
        self.unclosed += 1
        return _SpyReader(reader, self)

    async def wait_all_closed(self, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while self.unclosed:
                await asyncio.sleep(0.01)


def spy_on(storage: Storage, monkeypatch: pytest.MonkeyPatch) -> StorageSpy:
    """Also counts the bodies that really went by splice (``spliced``)."""
    spy = StorageSpy(storage)
    monkeypatch.setattr(storage, "open", spy.open)
    real_splice = splice.splice

    async def counted(*args: Any, **kwargs: Any) -> int:
        spy.spliced += 1
        return await real_splice(*args, **kwargs)

    monkeypatch.setattr(splice, "splice", counted)
    return spy


async def upload(person: Person, filename: str, data: bytes, content_type: str = "") -> Any:
    headers = {"Content-Type": content_type or "application/octet-stream"}
    response = await person.post(
        "/api/upload", params={"filename": filename}, data=io.BytesIO(data), headers=headers
    )
    body = await response.json()
    assert response.status == 201, body
    return body["attachments"][0]


async def get(person: Person, url: str, method: str = "GET", **headers: str) -> tuple[Any, bytes]:
    response = await person.request(method, url, headers=headers)
    return response, await response.read()


def parse_disposition(value: str) -> tuple[str, str, str]:
    """(kind, filename=, filename*) as Python's RFC 2231 parser reads them."""
    message = email.message.Message()
    message["Content-Disposition"] = value
    params = message.get_params(header="content-disposition")
    assert params is not None
    names = [v for k, v in params[1:] if k == "filename"]
    plain = next(v for v in names if isinstance(v, str))
    extended = next(v for v in names if isinstance(v, tuple))
    return params[0][0], plain, email.utils.collapse_rfc2231_value(extended)


async def link(client: TestClient, attachment_id: str, message_id: int) -> None:
    """Stands in for linking at post time (built separately) as test setup."""
    async with client.app[POOL].acquire() as conn:
        await conn.execute(
            "UPDATE attachments SET message_id = $1, linked_at = now() WHERE id = $2",
            message_id,
            attachment_id,
        )


async def test_download_is_identical_with_every_header(
    client: TestClient, people: People, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = await people.create("alice")
    spy = spy_on(client.app[STORAGE], monkeypatch)
    files = [
        ("picture.png", png_bytes(), "image/png", "inline", "image/png"),
        ("notes.txt", "héllo wörld\n".encode() * 1000, "text/plain", "attachment", None),
        ("data.bin", payload(300_000), "", "attachment", "application/octet-stream"),
    ]
    for name, data, declared, kind, served in files:
        attachment = await upload(alice, name, data, declared)
        assert ("thumbnail_url" in attachment) == (name == "picture.png")
        response, body = await get(alice, attachment["url"])
        assert response.status == 200
        assert hashlib.sha256(body).hexdigest() == attachment["sha256"]
        assert body == data
        headers = response.headers
        assert headers["Content-Length"] == str(len(data))
        assert headers["Content-Type"] == (served or "text/plain; charset=utf-8")
        assert headers["Content-Disposition"] == (
            f"{kind}; filename=\"{name}\"; filename*=UTF-8''{name}"
        )
        assert headers["ETag"] == f'"{attachment["sha256"]}"'
        assert headers["Cache-Control"] == CACHE
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Content-Security-Policy"] == CSP
        assert headers["Accept-Ranges"] == "bytes"
        assert headers["X-Request-ID"]
        # The name in the URL is cosmetic: the stored one is in the headers.
        for cosmetic in ("evil.html", "a%2Fb%00.png", "%E6%97%A5%22.txt"):
            other, other_body = await get(alice, f"/api/files/{attachment['id']}/{cosmetic}")
            assert (other.status, other_body) == (200, data), cosmetic
            assert other.headers["Content-Disposition"] == headers["Content-Disposition"]
    assert all(start == 0 and end is None for _, start, end in spy.opened)
    # Local files go to the socket by sendfile, S3 bodies as chunks (4 GETs per file;
    # the upload of the picture read it back once for its thumbnail).
    gets = 4 * len(files)
    local = isinstance(client.app[STORAGE], LocalStorage)
    assert (spy.sent_files, spy.streamed) == ((gets, 1) if local else (0, gets + 1))
    await spy.wait_all_closed()


async def test_ranges(client: TestClient, people: People, monkeypatch: pytest.MonkeyPatch) -> None:
    alice = await people.create("alice")
    data = payload(BIG)
    attachment = await upload(alice, "big.bin", data)
    url, etag = attachment["url"], f'"{attachment["sha256"]}"'
    spy = spy_on(client.app[STORAGE], monkeypatch)
    cases = {
        "bytes=0-0": (0, 0),
        "bytes=123456-234567": (123_456, 234_567),
        f"bytes={PART - 10}-{PART + 9}": (PART - 10, PART + 9),  # across an S3 part boundary
        f"bytes={2 * PART - 5}-": (2 * PART - 5, BIG - 1),  # open-ended, across the next
        "bytes=-1000": (BIG - 1000, BIG - 1),
        f"bytes=1000-{BIG + 50}": (1000, BIG - 1),  # the end is clamped
        f"bytes=-{BIG + 50}": (0, BIG - 1),
        " BYTES=7-8 ": (7, 8),  # the unit ignores case
    }
    for header, (start, end) in cases.items():
        spy.opened.clear()
        response, body = await get(alice, url, Range=header)
        assert response.status == 206, header
        assert body == data[start : end + 1], header
        assert response.headers["Content-Range"] == f"bytes {start}-{end}/{BIG}"
        assert response.headers["Content-Length"] == str(end - start + 1)
        assert response.headers["ETag"] == etag
        # Passed through to a ranged storage read (S3: GetObject with Range).
        assert [(start_, end_) for _, start_, end_ in spy.opened] == [(start, end)], header
    # Ranges of 1 MiB and more are offered a socket of their own; on S3 (plain HTTP
    # here) they take it, and their exact bytes above went by splice.
    big = [end - start + 1 >= SPLICE_MIN_BYTES for start, end in cases.values()]
    assert spy.zero_copy == big and big.count(True) == 2
    s3 = isinstance(client.app[STORAGE], S3Storage)
    assert (spy.spliced, spy.sent_files) == ((2, 0) if s3 else (0, len(cases)))

    for header in (f"bytes={BIG}-", f"bytes={BIG + 10}-{BIG + 20}", "bytes=-0"):
        response = await alice.get(url, headers={"Range": header})
        assert response.status == 416, header
        assert response.headers["Content-Range"] == f"bytes */{BIG}"
        assert response.headers["Cache-Control"] == "no-store"
        assert (await response.json())["error"]["code"] == "range_not_satisfiable"

    # Ignored (RFC 9110 allows it): several ranges, another unit, malformed, reversed.
    for header in ("bytes=0-1,5-6", "items=0-1", "bytes=abc", "bytes=5-2", "bytes=-"):
        spy.opened.clear()
        response = await alice.get(url, headers={"Range": header})
        assert response.status == 200, header
        assert response.headers["Content-Length"] == str(BIG)
        assert "Content-Range" not in response.headers
        assert spy.opened[0][1:] == (0, None)
        response.close()

    # If-Range: the range only when our entity tag matches, compared strongly.
    response, body = await get(alice, url, Range="bytes=0-9", **{"If-Range": etag})
    assert (response.status, body) == (206, data[:10])
    for validator in ('"other"', f"W/{etag}", "Wed, 21 Oct 2015 07:28:00 GMT"):
        response, body = await get(alice, url, Range="bytes=0-9", **{"If-Range": validator})
        assert response.status == 200 and len(body) == BIG, validator
    await spy.wait_all_closed()


async def test_conditional_requests_and_head_read_nothing(
    client: TestClient, people: People, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = await people.create("alice")
    data = b"some bytes\n" * 100
    attachment = await upload(alice, "notes.txt", data, "text/plain")
    url, etag = attachment["url"], f'"{attachment["sha256"]}"'
    spy = spy_on(client.app[STORAGE], monkeypatch)

    for header in (etag, f"W/{etag}", f'"nope", {etag}', f'"a", W/{etag}, "b"', "*"):
        response, body = await get(alice, url, **{"If-None-Match": header})
        assert (response.status, body) == (304, b""), header
        assert response.headers["ETag"] == etag
        assert response.headers["Cache-Control"] == CACHE
        assert "Content-Length" not in response.headers
    response, body = await get(alice, url, **{"If-None-Match": '"nope", W/"other"'})
    assert (response.status, body) == (200, data)
    # If-None-Match wins over Range (evaluated first).
    response, _ = await get(alice, url, Range="bytes=0-1", **{"If-None-Match": etag})
    assert response.status == 304
    assert len(spy.opened) == 1

    full, _ = await get(alice, url)
    head, body = await get(alice, url, "HEAD")
    assert (head.status, body) == (200, b"")
    for name in ("Content-Length", "Content-Type", "Content-Disposition", "ETag", "Accept-Ranges"):
        assert head.headers[name] == full.headers[name], name
    assert head.headers["X-Content-Type-Options"] == "nosniff"
    head, body = await get(alice, url, "HEAD", Range="bytes=10-19")
    assert (head.status, body) == (206, b"")
    assert head.headers["Content-Range"] == f"bytes 10-19/{len(data)}"
    assert head.headers["Content-Length"] == "10"
    assert len(spy.opened) == 2  # one for the 200 above, one for the GET before: no HEAD


@local_only
async def test_unreadable_answers_exactly_like_missing(client: TestClient, people: People) -> None:
    alice = await people.create("alice")  # the workspace's owner
    bob = await people.create("bob")  # same workspace, another uploader
    carol = await people.create("carol")  # in alice's private channel
    mallory = await people.create("mallory", workspace="globex")
    dave = await people.create("dave")
    async with client.app[POOL].acquire() as conn:
        globex = await workspaces.ensure_workspace(conn, "globex", "Globex")
        await workspaces.upsert_membership(conn, globex.id, dave.user_id, "member")
        _, secret = await accounts.issue_api_token(conn, dave.user_id, "g", workspace_id=globex.id)
    dave_in_globex = Person(client, dave.user_id, "dave", globex.id, secret)

    unlinked = await upload(alice, "photo.png", png_bytes(), "image/png")
    public = await make_channel(alice, "general")
    secret_channel = await make_channel(alice, "secret", private=True)
    response = await alice.post(
        f"/api/channels/{secret_channel['id']}/members", json={"user_id": carol.user_id}
    )
    assert response.status == 201, await response.text()
    in_private = await upload(alice, "plans.png", png_bytes(), "image/png")
    await link(client, in_private["id"], (await post(alice, secret_channel["id"], "x"))["id"])
    in_public = await upload(alice, "memo.txt", b"memo\n", "text/plain")
    await link(client, in_public["id"], (await post(alice, public["id"], "y"))["id"])

    missing_id = secrets.token_urlsafe(16)
    # Probes that would tell a readable file apart: a 416 with its size, a 304.
    probes: list[tuple[str, dict[str, str]]] = [
        ("GET", {}),
        ("GET", {"Range": f"bytes={10**9}-"}),
        ("GET", {"If-None-Match": "*"}),
        ("HEAD", {}),
    ]

    async def same_as_missing(person: Person, attachment: dict[str, Any]) -> None:
        pairs = [
            (attachment["url"], f"/api/files/{missing_id}/x.png"),
            (attachment["url"], "/api/files/not-an-id/x.png"),
            (f"/api/thumbnails/{attachment['id']}", f"/api/thumbnails/{missing_id}"),
        ]
        for (theirs, missing), (method, headers) in (
            (pair, probe) for pair in pairs for probe in probes
        ):
            r1, body1 = await get(person, theirs, method, **headers)
            r2, body2 = await get(person, missing, method, **headers)
            assert (r1.status, body1) == (404, body2), (person.username, theirs, headers)
            if method == "GET":
                assert (await r1.json())["error"]["code"] == "not_found"
            ignored = {"date", "x-request-id"}
            h1 = sorted((k.lower(), v) for k, v in r1.headers.items() if k.lower() not in ignored)
            h2 = sorted((k.lower(), v) for k, v in r2.headers.items() if k.lower() not in ignored)
            assert h1 == h2, (person.username, theirs, headers)
            assert r1.headers["Cache-Control"] == "no-store"
            assert not {"ETag", "Content-Range", "Content-Disposition"} & set(r1.headers)

    await same_as_missing(bob, unlinked)  # another uploader's unlinked upload
    await same_as_missing(mallory, unlinked)  # another workspace
    await same_as_missing(mallory, in_public)
    await same_as_missing(bob, in_private)  # a private channel bob is not in
    await same_as_missing(dave_in_globex, in_public)  # a token limited to another workspace

    for person, attachment in ((alice, unlinked), (carol, in_private), (bob, in_public)):
        response, _ = await get(person, attachment["url"])
        assert response.status == 200, (person.username, attachment["filename"])
    response, _ = await get(dave, in_public["url"])
    assert response.status == 200
    # A readable file without a thumbnail: its thumbnail URL is missing like any other.
    r1, body1 = await get(bob, f"/api/thumbnails/{in_public['id']}")
    r2, body2 = await get(bob, f"/api/thumbnails/{missing_id}")
    assert (r1.status, body1) == (r2.status, body2) == (404, body2)
    response = await client.get(in_public["url"])
    assert response.status == 401


@local_only
async def test_removed_member_is_refused_on_the_next_request(
    client: TestClient, people: People
) -> None:
    alice = await people.create("alice")
    bob = await people.create("bob")
    channel = await make_channel(alice, "general")
    attachment = await upload(alice, "memo.txt", b"memo\n", "text/plain")
    await link(client, attachment["id"], (await post(alice, channel["id"], "see"))["id"])
    response, body = await get(bob, attachment["url"])
    assert (response.status, body) == (200, b"memo\n")
    response = await alice.delete(f"/api/workspaces/{alice.workspace_id}/members/{bob.user_id}")
    assert response.status == 204
    r1, body1 = await get(bob, attachment["url"])
    r2, body2 = await get(bob, f"/api/files/{secrets.token_urlsafe(16)}/memo.txt")
    assert (r1.status, body1) == (r2.status, body2) == (404, body2)


async def test_scriptable_files_are_never_inline(client: TestClient, people: People) -> None:
    alice = await people.create("alice")
    polyglot = b"GIF89a/*" + b"\x00" * 32 + b"*/=1;<script>alert(document.cookie)</script>"
    cases = [
        # (name, declared, bytes, disposition, content type)
        ("logo.svg", "image/svg+xml", b'<svg xmlns="http://www.w3.org/2000/svg">'
         b"<script>alert(1)</script></svg>", "attachment", "application/octet-stream"),
        ("page.html", "text/html", b"<!doctype html><script>alert(1)</script>", "attachment",
         "application/octet-stream"),
        # Text that does not open with markup is text/plain; as a download, never a page.
        ("page2.html", "text/html", b"hi <script>alert(1)</script>", "attachment",
         "text/plain; charset=utf-8"),
        # Bytes that are a GIF render as an image, nothing else: no sniffing, no script.
        ("poly.gif", "image/gif", polyglot, "inline", "image/gif"),
        # The same bytes under a scriptable name are never inline.
        ("poly.html", "text/html", polyglot, "attachment", "application/octet-stream"),
    ]  # fmt: skip
    for name, declared, data, kind, served in cases:
        attachment = await upload(alice, name, data, declared)
        response, body = await get(alice, attachment["url"])
        assert (response.status, body) == (200, data), name
        assert response.headers["Content-Type"] == served, name
        assert response.headers["Content-Disposition"].startswith(f"{kind}; "), name
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Content-Security-Policy"] == CSP


@local_only
async def test_content_disposition_names_parse_back(client: TestClient, people: People) -> None:
    alice = await people.create("alice")
    dashed = "Résumé \u2013 日本語 notes.txt"
    for sent, stored, fallback in (
        (dashed, dashed, "Resume _ ___ notes.txt"),
        ('he said "hi" it\'s.txt', "he said _hi_ it's.txt", "he said _hi_ it's.txt"),
    ):
        attachment = await upload(alice, sent, b"words\n", "text/plain")
        assert attachment["filename"] == stored
        response, _ = await get(alice, attachment["url"])
        value = response.headers["Content-Disposition"]
        assert value.isascii()
        assert parse_disposition(value) == ("attachment", fallback, stored)

    # What the sanitiser never lets through is still encoded safely.
    tricky = 'a"b\\c\x01d/é.txt'
    value = content_disposition("attachment", tricky)
    assert value.startswith('attachment; filename="a\\"b\\\\c_d_e.txt"; ')
    assert "filename*=UTF-8''a%22b%5Cc%01d%2F%C3%A9.txt" in value
    assert parse_disposition(value) == ("attachment", 'a"b\\c_d_e.txt', tricky)
    assert "%27" in content_disposition("inline", "it's.png")  # RFC 8187 attr-char only


async def test_thumbnails(
    client: TestClient, people: People, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = await people.create("alice")
    attachment = await upload(alice, "picture.png", png_bytes(), "image/png")
    url = attachment["thumbnail_url"]
    assert url == f"/api/thumbnails/{attachment['id']}"
    spy = spy_on(client.app[STORAGE], monkeypatch)
    response, body = await get(alice, url, Range="bytes=0-9")  # ranges are not offered
    assert response.status == 200
    thumb = Image.open(io.BytesIO(body))
    assert thumb.format == "WEBP" and thumb.size == (400, 300)
    etag = f'"{attachment["sha256"]}-thumb"'
    assert response.headers["Content-Type"] == "image/webp"
    assert response.headers["Content-Disposition"] == (
        "inline; filename=\"picture-thumb.webp\"; filename*=UTF-8''picture-thumb.webp"
    )
    assert response.headers["Content-Length"] == str(len(body))
    assert response.headers["ETag"] == etag
    assert response.headers["Cache-Control"] == CACHE
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Content-Security-Policy"] == CSP
    assert response.headers["Accept-Ranges"] == "none"
    head, head_body = await get(alice, url, "HEAD")
    assert (head.status, head_body) == (200, b"")
    assert head.headers["Content-Length"] == str(len(body))
    response, _ = await get(alice, url, **{"If-None-Match": etag})
    assert response.status == 304
    assert len(spy.opened) == 1
    await spy.wait_all_closed()


async def test_empty_file(client: TestClient, people: People) -> None:
    alice = await people.create("alice")
    attachment = await upload(alice, "empty.txt", b"", "text/plain")
    assert attachment["size"] == 0
    for headers in ({}, {"Range": "bytes=0-"}, {"Range": "bytes=-5"}, {"Range": "bytes=0-0"}):
        response, body = await get(alice, attachment["url"], **headers)
        assert (response.status, body) == (200, b""), headers  # ranges of nothing: ignored
        assert response.headers["Content-Length"] == "0"
        assert response.headers["ETag"] == f'"{hashlib.sha256(b"").hexdigest()}"'


async def _partial_download(
    host: str, port: int, path: str, token: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A GET whose client reads the headers and 1000 bytes, then stops reading."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # so the server stalls
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, port))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head
    await reader.readexactly(1000)
    return reader, writer


def open_fds() -> dict[str, str]:
    """What a download could leak in this process: its descriptors (TCP sockets, splice
    pipes, files) and what each is open on; not Unix sockets, the database pool's, which
    grows on demand with concurrent requests."""
    with open("/proc/net/unix") as table:
        unix = {f"socket:[{line.split()[6]}]" for line in list(table)[1:]}
    found = {}
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor is gone already
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target not in unix:
                found[fd] = target
    return found


async def fds_back_to(before: dict[str, str], timeout: float = 5.0) -> None:
    """Wait until this process holds exactly the descriptors of ``before``."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            while open_fds() != before:
                await asyncio.sleep(0.02)
    now = open_fds()
    assert now == before, {
        "opened": {k: v for k, v in now.items() if before.get(k) != v},
        "closed": {k: v for k, v in before.items() if now.get(k) != v},
    }


def open_files_under(root: Path) -> list[str]:
    """Files under ``root`` this process holds open (none for S3)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith(str(root.resolve())):
                found.append(target)
    return found


def _small_pool_storage(monkeypatch: pytest.MonkeyPatch, **s3_options: Any) -> None:
    """Make the app build its S3 client with these options (a small pool, few retries)."""

    def create(config: Config) -> Storage:
        if config.effective_storage == "s3":
            return S3Storage(config, **s3_options)
        return LocalStorage(config.files_dir)

    monkeypatch.setattr(echora_server.storage.factory, "create_storage", create)


async def _upload_big(session: aiohttp.ClientSession, data: bytes) -> str:
    """Upload ``data`` as big.bin; its download URL."""
    async with session.post("/api/upload?filename=big.bin", data=io.BytesIO(data)) as response:
        assert response.status == 201, await response.text()
        return str((await response.json())["attachments"][0]["url"])


@pytest.mark.parametrize("handler_cancellation", [True, False], ids=["cancelled", "writes-fail"])
async def test_clients_that_leave_release_their_reads(
    config: Config, monkeypatch: pytest.MonkeyPatch, handler_cancellation: bool
) -> None:
    _small_pool_storage(monkeypatch, max_pool_connections=POOL_SIZE)
    async with running_app(config, handler_cancellation=handler_cancellation) as (app, host, port):
        token, data = await _token(app), payload(BIG)
        auth = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession(f"http://{host}:{port}", headers=auth) as session:
            url = await _upload_big(session, data)
            async with session.get(url) as response:  # every pool and connection in place
                assert len(await response.read()) == len(data)
            # The server closes the file it sent just after the last byte reached us.
            async with asyncio.timeout(5):
                while open_files_under(config.files_dir):
                    await asyncio.sleep(0.02)
            before = open_fds()
            spy = spy_on(app[STORAGE], monkeypatch)
            for _ in range(3):  # 3 x the pool: a leak would exhaust it twice over
                started = await asyncio.gather(
                    *(_partial_download(host, port, url, token) for _ in range(POOL_SIZE))
                )
                assert spy.unclosed == POOL_SIZE  # every read is mid-stream
                for _, writer in started:
                    writer.transport.abort()
                await spy.wait_all_closed()
            # The server's side of every left connection, its store sockets, pipes and
            # files are closed: this process (server and client) holds what it held.
            await fds_back_to(before)
            async with asyncio.timeout(10):  # a leaked pool would wait here forever
                async with session.get(url) as response:
                    assert response.status == 200
                    assert (
                        hashlib.sha256(await response.read()).digest()
                        == hashlib.sha256(data).digest()
                    )
            await spy.wait_all_closed()
            assert open_files_under(config.files_dir) == []
            # On S3 every one of these big reads went by splice, and the kernel-side
            # relay let go of the reads its clients left.
            s3 = config.effective_storage == "s3"
            assert spy.spliced == (3 * POOL_SIZE + 1 if s3 else 0)


async def test_concurrent_big_downloads_are_exact(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many spliced (S3) or sent (local) bodies at once, of two files and ranges of them,
    each on its own connection: every byte where it belongs."""
    files = [payload(2 * MiB + 11, seed=7), payload(3 * MiB, seed=8)]
    async with running_app(config, handler_cancellation=False) as (app, host, port):
        auth = {"Authorization": f"Bearer {await _token(app)}"}
        async with aiohttp.ClientSession(f"http://{host}:{port}", headers=auth) as session:
            urls = [await _upload_big(session, data) for data in files]
        spy = spy_on(app[STORAGE], monkeypatch)

        async def fetch(n: int) -> None:
            data, url = files[n % 2], urls[n % 2]
            start = (n * 65_537) % MiB if n % 3 else 0
            headers = {**auth, "Range": f"bytes={start}-"} if start else auth
            connector = aiohttp.TCPConnector(force_close=True)
            async with (
                aiohttp.ClientSession(f"http://{host}:{port}", connector=connector) as own,
                own.get(url, headers=headers) as response,
            ):
                assert response.status == (206 if start else 200)
                assert await response.read() == data[start:], n

        async with asyncio.timeout(60):
            await asyncio.gather(*(fetch(n) for n in range(12)))
        await spy.wait_all_closed()
    assert spy.spliced == (12 if config.effective_storage == "s3" else 0)


class _BreaksAfterOneChunk:
    """A reader that offers neither file nor socket, yields one chunk, then fails in a
    way no one expects (a bug, not an outage)."""

    def __init__(self, inner: ObjectReader) -> None:
        self.size, self.length, self._inner = inner.size, inner.length, inner

    async def chunks(self, chunk_size: int = 256 * 1024) -> AsyncIterator[bytes]:
        async for chunk in self._inner.chunks(chunk_size):
            yield chunk
            raise RuntimeError("a bug")

    def file_region(self) -> None:
        return None

    def socket_body(self) -> None:
        return None

    async def close(self) -> None:
        await self._inner.close()


async def test_a_bug_after_the_headers_cuts_the_connection(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No JSON error can follow a started body: the client gets a short body and a
    closed connection, never an error document spliced into the file."""
    data = payload(3 * MiB)
    async with running_app(config, handler_cancellation=False) as (app, host, port):
        token = await _token(app)
        auth = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession(f"http://{host}:{port}", headers=auth) as session:
            url = await _upload_big(session, data)
        storage = app[STORAGE]
        real_open = storage.open

        async def open_breaking(*args: Any, **kwargs: Any) -> _BreaksAfterOneChunk:
            return _BreaksAfterOneChunk(await real_open(*args, **kwargs))

        monkeypatch.setattr(storage, "open", open_breaking)
        client = await RawClient.connect(host, port, rcvbuf=1 << 20)
        try:
            request = f"GET {url} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\r\n"
            with structlog.testing.capture_logs() as logs:
                await asyncio.get_running_loop().sock_sendall(client.sock, request.encode())
                async with asyncio.timeout(10):
                    received = await client.until_closed()
        finally:
            client.sock.close()
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert 0 < len(body) < len(data) and data.startswith(body)
    assert b"internal_error" not in body
    assert [e["event"] for e in logs if e["log_level"] == "error"] == [
        "error_after_response_started"
    ]


class RawClient:
    """HTTP/1.1 over a plain non-blocking socket: nothing reads until told to."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self._buffer = sock, b""

    @classmethod
    async def connect(cls, host: str, port: int, rcvbuf: int = 4096) -> RawClient:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
        return cls(sock)

    def read_now(self) -> None:
        """Take all the socket gets, without waiting: each read opens the window, and
        the server's kernel (on loopback, at once) sends what it queued, until its
        send queue is empty and its socket has all its room."""
        with contextlib.suppress(BlockingIOError):
            while chunk := self.sock.recv(1 << 20):
                self._buffer += chunk

    async def _fill(self) -> None:
        chunk = await asyncio.get_running_loop().sock_recv(self.sock, 65536)
        if not chunk:
            raise ConnectionError("closed by the server")
        self._buffer += chunk

    async def response(self) -> tuple[bytes, bytes]:
        """The next response's head and its body (by Content-Length)."""
        while b"\r\n\r\n" not in self._buffer:
            await self._fill()
        head, _, self._buffer = self._buffer.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        fields = dict(line.partition(b": ")[::2] for line in lines[1:])
        length = int(next(v for k, v in fields.items() if k.lower() == b"content-length"))
        while len(self._buffer) < length:
            await self._fill()
        body, self._buffer = self._buffer[:length], self._buffer[length:]
        return head, body

    async def until_closed(self) -> bytes:
        """Everything not yet returned by ``response``, up to the server's close."""
        with contextlib.suppress(ConnectionError):
            while True:
                await self._fill()
        return self._buffer


async def test_pipelined_responses_keep_their_order_and_bytes(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A small response still queued in the transport, then a big one: the big one's
    spliced bytes wait until the small one's tail and its own headers are in the kernel."""
    small, big = payload(60_000, seed=1), payload(2 * MiB, seed=2)
    real_may_splice, real_flushed = download_bodies.may_splice, download_bodies._flushed
    queued: list[int] = []

    def tiny_send_buffer(request: web.Request, *args: Any) -> bool:
        # The kernel takes a few KiB; aiohttp's transport keeps the rest of the small
        # response (below its 64 KiB high-water mark, so its handler does not wait).
        assert request.transport is not None
        sock = request.transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        return real_may_splice(request, *args)

    async def flushed(request: web.Request, transport: asyncio.Transport) -> None:
        queued.append(transport.get_write_buffer_size())
        # The worst moment, made certain: the store's bytes have arrived (the transport
        # cannot write meanwhile: the client reads nothing), then the client reads, so
        # the socket has room before the transport could put its queue there. Bytes
        # spliced right now would come first.
        await asyncio.sleep(0.2)
        client.read_now()
        await real_flushed(request, transport)

    monkeypatch.setattr(download_bodies, "may_splice", tiny_send_buffer)
    monkeypatch.setattr(download_bodies, "_flushed", flushed)
    async with running_app(config, handler_cancellation=False) as (app, host, port):
        token = await _token(app)
        auth = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession(f"http://{host}:{port}", headers=auth) as session:
            urls = [await _upload_big(session, data) for data in (small, big)]
        spy = spy_on(app[STORAGE], monkeypatch)
        client = await RawClient.connect(host, port)  # read from in flushed() too
        try:
            requests = "".join(
                f"GET {url} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\r\n"
                for url in urls
            )
            await asyncio.get_running_loop().sock_sendall(client.sock, requests.encode())
            await asyncio.sleep(0.5)  # nothing read yet: the small response stays queued
            async with asyncio.timeout(10):
                for data in (small, big):
                    head, body = await client.response()
                    assert head.startswith(b"HTTP/1.1 200 "), head
                    assert body == data
        finally:
            client.sock.close()
    if config.effective_storage == "s3":
        assert spy.spliced == 1
        assert queued[0] > 0  # the splice did wait for the queue to drain
    else:
        assert spy.spliced == 0  # local files go by sendfile, which waits by itself


async def test_storage_outage(
    database_url: str,
    tmp_path: Path,
    s3_server: S3Server,
    s3_config_values: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    endpoint = urlparse(s3_server.endpoint_url)
    assert endpoint.hostname is not None and endpoint.port is not None
    _small_pool_storage(monkeypatch, max_attempts=1)
    async with FaultProxy((endpoint.hostname, endpoint.port)) as proxy:
        config = Config(
            database_url=database_url,
            data_dir=tmp_path,
            s3_part_size=PART,
            max_upload_bytes=3 * PART,
            storage_idle_timeout=5,
            **{**s3_config_values, "s3_endpoint_url": proxy.url},
        )
        async with running_app(config, handler_cancellation=False) as (app, host, port):
            token, data = await _token(app), payload(BIG)
            auth = {"Authorization": f"Bearer {token}"}
            async with aiohttp.ClientSession(f"http://{host}:{port}", headers=auth) as session:
                url = await _upload_big(session, data)
                spy = spy_on(app[STORAGE], monkeypatch)
                proxy.block()  # before the headers: a clean 503
                async with session.get(url) as response:
                    body = await response.json()
                    assert response.status == 503, body
                    assert body["error"]["code"] == "storage_unavailable"
                    assert response.headers["Retry-After"] == "5"
                    assert response.headers["Cache-Control"] == "no-store"
                proxy.unblock()

                # After the headers: the connection is cut, the body stays short.
                reader, writer = await _partial_download(host, port, url, token)
                received = 1000
                with structlog.testing.capture_logs() as logs:
                    proxy.block()
                    with contextlib.suppress(ConnectionError):
                        async with asyncio.timeout(10):
                            while chunk := await reader.read(64 * 1024):
                                received += len(chunk)
                assert received < BIG
                assert [e["log_level"] for e in logs if e["event"] == "download_aborted"] == [
                    "error"
                ]
                writer.close()
                proxy.unblock()

                async with session.get(url) as response:  # and storage serves again
                    assert response.status == 200
                    assert await response.read() == data
                assert spy.spliced == 2  # the body cut midway came by splice


async def _token(app: web.Application) -> str:
    """A user and an API token, for apps run without the test client."""
    async with app[POOL].acquire() as conn:
        user, _ = await accounts.create_user(
            conn, workspace_slug="acme", username="alice", password=PASSWORD, role="member"
        )
        _, token = await accounts.issue_api_token(conn, user.id, "test")
    return token


@pytest.mark.parametrize("size", [6, 2 * MiB], ids=["small", "big"])
async def test_missing_object_answers_not_found(
    client: TestClient, people: People, size: int
) -> None:
    """A row whose object is gone (its message being deleted meanwhile): 404, not 503.
    (Big: S3's 404 comes on the socket of its own; the read falls back to the pool.)"""
    alice = await people.create("alice")
    attachment = await upload(alice, "notes.txt", b"words\n" * (size // 6), "text/plain")
    async with client.app[POOL].acquire() as conn:
        key = await conn.fetchval(
            "SELECT storage_key FROM attachments WHERE id = $1", attachment["id"]
        )
    await client.app[STORAGE].delete(key)
    r1, body1 = await get(alice, attachment["url"])
    r2, body2 = await get(alice, f"/api/files/{secrets.token_urlsafe(16)}/notes.txt")
    assert (r1.status, body1) == (r2.status, body2) == (404, body2)


STALL_BOUND = 1.0  # ECHORA_STORAGE_TIMEOUT in the stall tests


async def test_a_silent_store_answers_downloads_503_within_the_bound(
    database_url: str,
    tmp_path: Path,
    s3_server: S3Server,
    s3_config_values: dict[str, Any],
    aiohttp_client: Callable[..., Awaitable[TestClient]],
) -> None:
    async with behind_proxy(
        database_url,
        tmp_path,
        s3_server,
        s3_config_values,
        aiohttp_client,
        storage_timeout=STALL_BOUND,
        storage_idle_timeout=STALL_BOUND,
    ) as (proxy, client, _):
        alice = await People(client).create("alice")
        small = await upload(alice, "notes.txt", b"words\n" * 100, "text/plain")
        big = await upload(alice, "big.bin", payload(2 * MiB))  # read on a socket of its own
        picture = await upload(alice, "picture.png", png_bytes(), "image/png")
        proxy.silence()
        loop = asyncio.get_running_loop()
        for url in (small["url"], big["url"], picture["thumbnail_url"]):
            started = loop.time()
            response, body = await get(alice, url)
            assert response.status == 503, body
            assert json.loads(body)["error"]["code"] == "storage_unavailable"
            assert response.headers["Retry-After"] == "5"
            assert loop.time() - started < STALL_BOUND + 1.0, url
        proxy.speak()
        response, body = await get(alice, small["url"])
        assert response.status == 200 and body == b"words\n" * 100


@pytest.mark.parametrize("config", ["local"], indirect=True)
async def test_a_hung_disk_answers_a_download_503_within_the_bound(
    config: Config, aiohttp_client: Callable[..., Awaitable[TestClient]]
) -> None:
    client = await aiohttp_client(
        create_app(config.model_copy(update={"storage_timeout": STALL_BOUND}))
    )
    alice = await People(client).create("alice")
    attachment = await upload(alice, "notes.txt", b"words\n", "text/plain")
    async with client.app[POOL].acquire() as conn:
        key = await conn.fetchval(
            "SELECT storage_key FROM attachments WHERE id = $1", attachment["id"]
        )
    path = config.files_dir / key
    path.unlink()
    os.mkfifo(path)  # opening it blocks until a writer comes: a disk that never answers
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        response, body = await get(alice, attachment["url"])
        assert response.status == 503, body
        assert json.loads(body)["error"]["code"] == "storage_unavailable"
        assert loop.time() - started < STALL_BOUND + 1.0
        assert (await client.get("/healthz")).status == 200  # the loop was never blocked
    finally:
        # Release the thread still waiting in open(), as a disk that came back would.
        writer = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        os.close(writer)


async def test_metrics_count_how_bodies_reached_the_socket(
    client: TestClient, people: People, config: Config
) -> None:
    alice = await people.create("alice")
    small = await upload(alice, "notes.txt", b"words\n", "text/plain")
    big = await upload(alice, "big.bin", payload(2 * MiB))
    for attachment in (small, big):
        response, _ = await get(alice, attachment["url"])
        assert response.status == 200
    text = await (await client.get("/metrics")).text()
    counts = {
        line.split('"')[1]: float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("echora_download_bodies_total{")
    }
    if config.effective_storage == "local":
        assert counts == {"sendfile": 2.0}
    else:  # a small body through Python, a big one spliced in the kernel
        assert counts == {"chunks": 1.0, "splice": 1.0}
