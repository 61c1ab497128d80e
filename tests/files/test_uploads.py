"""POST/PUT /api/upload on both storage backends: local disk and S3 (a real SeaweedFS).

Every refused upload is checked for leftovers the way an operator would see them: rows
in PostgreSQL, objects under our prefix, temp files, and multipart uploads as the S3
server itself lists them.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gzip
import hashlib
import io
import os
import random
import secrets
import struct
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlparse

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from PIL import Image, ImageDraw
from support.backends import behind_proxy, running_app
from support.faultproxy import FaultProxy
from support.people import PASSWORD, People, Person
from support.seaweed import S3Server, direct_s3_client

from echora_server.accounts import service as accounts
from echora_server.app import create_app
from echora_server.config import Config
from echora_server.db import deletions, workspaces
from echora_server.db.pool import POOL
from echora_server.files.cleanup import sweep_once
from echora_server.files.mediatypes import disposition
from echora_server.storage.base import Storage
from echora_server.storage.factory import STORAGE

MiB = 1024 * 1024
PART = 5 * MiB  # S3's smallest part: files above it go through a multipart upload
LIMIT = 6 * MiB  # so an oversize file is always a multipart upload on S3
MAX_FILES = 3
ClientFactory = Callable[..., Awaitable[TestClient]]
Part = tuple[str, str | None, str | None, bytes]  # name, filename, content type, data


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def png_bytes(width: int = 640, height: int = 480) -> bytes:
    image = Image.new("RGB", (width, height), (30, 120, 200))
    ImageDraw.Draw(image).ellipse((40, 40, width - 40, height - 40), fill=(240, 200, 20))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def encode_multipart(parts: list[Part]) -> tuple[bytes, str]:
    """A multipart/form-data body exactly as given (field order, raw UTF-8 names)."""
    boundary = f"echora-{secrets.token_hex(8)}"
    out = bytearray()
    for name, filename, content_type, data in parts:
        disposition_value = f'form-data; name="{name}"'
        if filename is not None:
            disposition_value += f'; filename="{filename}"'
        out += f"--{boundary}\r\nContent-Disposition: {disposition_value}\r\n".encode()
        if content_type:
            out += f"Content-Type: {content_type}\r\n".encode()
        out += b"\r\n" + data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


BACKENDS = ("local", "s3")


@pytest.fixture
def config_overrides() -> dict[str, Any]:
    return {"max_upload_bytes": LIMIT, "max_files_per_upload": MAX_FILES, "s3_part_size": PART}


@dataclass
class Leftovers:
    rows: int
    queued_deletions: int
    objects: list[str]
    temp_files: list[str]
    uploads: list[str]

    @property
    def empty(self) -> bool:
        return not (
            self.rows or self.queued_deletions or self.objects or self.temp_files or self.uploads
        )


async def leftovers(app: web.Application, config: Config, server: S3Server | None) -> Leftovers:
    async with app[POOL].acquire() as conn:
        rows = await conn.fetchval("SELECT count(*) FROM attachments")
        queued = await conn.fetchval("SELECT count(*) FROM storage_deletions")
    storage: Storage = app[STORAGE]
    objects = [info.key async for info in storage.list()]
    temp_files: list[str] = []
    uploads: list[str] = []
    if server is None:
        temp_files = os.listdir(config.files_dir / ".tmp")
    else:  # ask the S3 server itself, not our code
        async with direct_s3_client(server) as s3:
            found = await s3.list_multipart_uploads(
                Bucket=server.bucket, Prefix=f"{config.s3_prefix}/"
            )
        uploads = [u["Key"] for u in found.get("Uploads", [])]
    return Leftovers(rows, queued, objects, temp_files, uploads)


@pytest.fixture
def check_leftovers(
    request: pytest.FixtureRequest, client: TestClient, config: Config
) -> Callable[..., Awaitable[Leftovers]]:
    server = request.getfixturevalue("s3_server") if config.effective_storage == "s3" else None

    async def check() -> Leftovers:
        return await leftovers(client.app, config, server)

    return check


async def make_channel(client: TestClient, owner: Person, *members: Person) -> int:
    async with client.app[POOL].acquire() as conn:
        channel_id: int = await conn.fetchval(
            "INSERT INTO channels (workspace_id, name, created_by) VALUES ($1, $2, $3) "
            "RETURNING id",
            owner.workspace_id,
            f"c-{secrets.token_hex(3)}",
            owner.user_id,
        )
        for person in (owner, *members):
            await conn.execute(
                "INSERT INTO channel_members (channel_id, user_id, workspace_id) "
                "VALUES ($1, $2, $3)",
                channel_id,
                person.user_id,
                person.workspace_id,
            )
    return channel_id


async def stored_bytes(client: TestClient, key: str) -> bytes:
    async with await client.app[STORAGE].open(key) as reader:
        return b"".join([chunk async for chunk in reader.chunks()])


async def post_parts(person: Person, parts: list[Part], **kw: Any) -> aiohttp.ClientResponse:
    body, content_type = encode_multipart(parts)
    headers = {"Content-Type": content_type, **kw.pop("headers", {})}
    response: aiohttp.ClientResponse = await person.post(
        "/api/upload", data=io.BytesIO(body), headers=headers, **kw
    )
    return response


async def error_of(response: aiohttp.ClientResponse, status: int) -> dict[str, Any]:
    body = await response.json()
    assert response.status == status, body
    assert response.headers["Cache-Control"] == "no-store"
    error: dict[str, Any] = body["error"]
    return error


async def test_multipart_upload_of_several_files(client: TestClient, people: People) -> None:
    alice = await people.create("alice")
    channel_id = await make_channel(client, alice)
    image, text, big = png_bytes(), "héllo, wörld\n".encode() * 100, payload(PART + 12_345)
    form = aiohttp.FormData()
    form.add_field("channel_id", str(channel_id))  # fields first, then the files
    form.add_field("file", io.BytesIO(image), filename="picture.png", content_type="image/png")
    form.add_field("file", io.BytesIO(text), filename="notes.txt", content_type="text/plain")
    form.add_field(
        "file", io.BytesIO(big), filename="data.bin", content_type="application/octet-stream"
    )
    response = await alice.post("/api/upload", data=form)
    body = await response.json()
    assert response.status == 201, body

    got = body["attachments"]
    assert [a["filename"] for a in got] == ["picture.png", "notes.txt", "data.bin"]
    assert [a["size"] for a in got] == [len(image), len(text), len(big)]
    assert [a["sha256"] for a in got] == [hashlib.sha256(d).hexdigest() for d in (image, text, big)]
    assert [a["mime_type"] for a in got] == ["image/png", "text/plain", "application/octet-stream"]
    assert (got[0]["width"], got[0]["height"]) == (640, 480)
    assert "width" not in got[1] and "width" not in got[2]
    for attachment in got:
        assert len(attachment["id"]) == 22
        assert attachment["url"] == f"/api/files/{attachment['id']}/{attachment['filename']}"

    async with client.app[POOL].acquire() as conn:
        rows = {
            r["id"]: r
            for r in await conn.fetch("SELECT * FROM attachments ORDER BY created_at, id")
        }
    assert set(rows) == {a["id"] for a in got}
    for attachment, data in zip(got, (image, text, big), strict=True):
        row = rows[attachment["id"]]
        assert (row["uploader_id"], row["workspace_id"]) == (alice.user_id, alice.workspace_id)
        assert row["channel_id"] == channel_id and row["message_id"] is None
        assert await stored_bytes(client, row["storage_key"]) == data
        assert str(alice.workspace_id) in row["storage_key"]
        assert attachment["filename"] not in row["storage_key"]
    png_row = rows[got[0]["id"]]
    assert png_row["declared_type"] == "image/png" and png_row["detected_type"] == "image/png"
    assert rows[got[2]["id"]]["detected_type"] is None
    assert all(rows[a["id"]]["thumbnail_key"] is None for a in got[1:])

    thumbnail = Image.open(io.BytesIO(await stored_bytes(client, png_row["thumbnail_key"])))
    assert thumbnail.format == "WEBP" and thumbnail.size == (400, 300)
    keys = sorted([info.key async for info in client.app[STORAGE].list()])
    assert keys == sorted([r["storage_key"] for r in rows.values()] + [png_row["thumbnail_key"]])


async def test_raw_body_uploads(client: TestClient, people: People) -> None:
    alice = await people.create("alice")
    text = b"plain words\n"
    # curl --data-binary @notes.txt: a form content type that says nothing of the file
    response = await alice.post(
        f"/api/upload?filename=notes.txt&workspace_id={alice.workspace_id}",
        data=text,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    body = await response.json()
    assert response.status == 201, body
    (notes,) = body["attachments"]
    assert (notes["filename"], notes["size"], notes["mime_type"]) == ("notes.txt", 12, "text/plain")

    # curl -T photo.png URL: a PUT without a content type; the only workspace is the default
    image = png_bytes(300, 200)
    response = await alice.request("PUT", "/api/upload?filename=photo.png", data=image)
    body = await response.json()
    assert response.status == 201, body
    (photo,) = body["attachments"]
    assert (photo["mime_type"], photo["width"], photo["height"]) == ("image/png", 300, 200)
    assert photo["sha256"] == hashlib.sha256(image).hexdigest()
    async with client.app[POOL].acquire() as conn:
        key = await conn.fetchval("SELECT storage_key FROM attachments WHERE id = $1", photo["id"])
    assert await stored_bytes(client, key) == image


@pytest.mark.parametrize("position", ["only", "second"])
async def test_oversize_file_leaves_nothing(
    people: People, check_leftovers: Callable[..., Awaitable[Leftovers]], position: str
) -> None:
    alice = await people.create("alice")
    parts: list[Part] = [("file", "big.bin", None, payload(LIMIT + MiB))]
    if position == "second":
        parts.insert(0, ("file", "fine.png", "image/png", png_bytes()))
    error = await error_of(await post_parts(alice, parts), 413)
    assert error["code"] == "file_too_large"
    assert error["details"]["limit_bytes"] == LIMIT
    assert (await check_leftovers()).empty


async def test_too_many_files(
    people: People, check_leftovers: Callable[..., Awaitable[Leftovers]]
) -> None:
    alice = await people.create("alice")
    parts: list[Part] = [("file", f"f{i}.txt", "text/plain", b"x") for i in range(MAX_FILES + 1)]
    error = await error_of(await post_parts(alice, parts), 413)
    assert error["code"] == "too_many_files"
    assert error["details"] == {"limit_files": MAX_FILES}
    assert (await check_leftovers()).empty


async def test_content_encoding_is_refused(
    people: People, check_leftovers: Callable[..., Awaitable[Leftovers]]
) -> None:
    alice = await people.create("alice")
    body, content_type = encode_multipart([("file", "a.txt", None, b"hello " * 1000)])
    response = await alice.post(
        "/api/upload",
        data=gzip.compress(body),
        headers={"Content-Type": content_type, "Content-Encoding": "gzip"},
    )
    assert (await error_of(response, 415))["code"] == "unsupported_encoding"
    response = await alice.post(
        "/api/upload?filename=a.txt",
        data=gzip.compress(b"x" * 10000),
        headers={"Content-Encoding": "gzip"},
    )
    assert (await error_of(response, 415))["code"] == "unsupported_encoding"
    assert (await check_leftovers()).empty


async def test_html_declared_as_png_is_refused(
    people: People, check_leftovers: Callable[..., Awaitable[Leftovers]]
) -> None:
    alice = await people.create("alice")
    html = b"<!doctype html><script>alert(document.cookie)</script>"
    parts: list[Part] = [
        ("file", "fine.txt", "text/plain", b"first file, stored, then deleted"),
        ("file", "cat.png", "image/png", html),
    ]
    error = await error_of(await post_parts(alice, parts), 415)
    assert error["code"] == "type_mismatch"
    assert (await check_leftovers()).empty
    # No declared type at all: the name's extension stands in for it.
    response = await alice.post("/api/upload?filename=cat.png", data=html)
    assert (await error_of(response, 415))["code"] == "type_mismatch"


async def test_svg_is_accepted_but_never_inline(client: TestClient, people: People) -> None:
    alice = await people.create("alice")
    svg = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
    response = await post_parts(alice, [("file", "logo.svg", "image/svg+xml", svg)])
    body = await response.json()
    assert response.status == 201, body
    (logo,) = body["attachments"]
    assert logo["mime_type"] == "application/octet-stream" and "width" not in logo
    async with client.app[POOL].acquire() as conn:
        row = await conn.fetchrow("SELECT * FROM attachments WHERE id = $1", logo["id"])
    assert (row["declared_type"], row["detected_type"]) == ("image/svg+xml", None)
    assert row["thumbnail_key"] is None
    assert disposition(row["detected_type"], row["declared_type"], row["filename"]) == "attachment"


async def test_filenames_are_sanitised(people: People) -> None:
    alice = await people.create("alice")
    long_name = "x" * 300 + ".txt"
    parts: list[Part] = [
        ("file", "../../etc/passwd", None, b"root:x:0:0"),
        ("file", "\u202egnp.exe", None, b"MZ not really"),
        ("file", long_name, None, b"long"),
    ]
    response = await post_parts(alice, parts)
    body = await response.json()
    assert response.status == 201, body
    names = [a["filename"] for a in body["attachments"]]
    assert names == ["passwd", "gnp.exe", "x" * 96 + ".txt"]
    for attachment in body["attachments"]:
        assert attachment["url"].endswith("/" + quote(attachment["filename"], safe=""))


async def test_outsiders_and_anonymous_callers_store_nothing(
    client: TestClient, people: People, check_leftovers: Callable[..., Awaitable[Leftovers]]
) -> None:
    alice = await people.create("alice")
    mallory = await people.create("mallory", workspace="globex")
    channel_id = await make_channel(client, alice)
    parts: list[Part] = [("channel_id", None, None, str(channel_id).encode())]
    parts.append(("file", "x.txt", None, b"x"))
    assert (await error_of(await post_parts(mallory, parts), 404))["code"] == "not_found"
    response = await mallory.post(f"/api/upload?workspace_id={alice.workspace_id}", data=b"x")
    assert (await error_of(response, 404))["code"] == "not_found"
    response = await client.post("/api/upload?filename=x.txt", data=b"x")
    assert (await error_of(response, 401))["code"] == "auth_required"
    assert (await check_leftovers()).empty


@pytest.mark.parametrize("handler_cancellation", [True, False], ids=["cancelled", "reads-fail"])
async def test_client_gone_mid_upload_leaves_nothing(
    request: pytest.FixtureRequest, config: Config, handler_cancellation: bool
) -> None:
    server = request.getfixturevalue("s3_server") if config.effective_storage == "s3" else None
    async with running_app(config, handler_cancellation=handler_cancellation) as (app, host, port):
        async with app[POOL].acquire() as conn:
            user, _ = await accounts.create_user(
                conn, workspace_slug="acme", username="alice", password=PASSWORD, role="member"
            )
            _, token = await accounts.issue_api_token(conn, user.id, "test")
        body, content_type = encode_multipart(
            [
                ("file", "first.txt", None, b"complete" * 1000),
                ("file", "big.bin", None, payload(LIMIT)),
            ]
        )
        sent = body.index(b"big.bin") + PART + MiB // 2  # file 1, and >1 S3 part of file 2
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(
            f"POST /api/upload HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body[:sent]
        )
        await writer.drain()

        async def in_flight() -> bool:
            found = await leftovers(app, config, server)
            second_started = found.uploads if server else found.temp_files
            return len(found.objects) == 1 and bool(second_started)

        async with asyncio.timeout(10):
            while not await in_flight():
                await asyncio.sleep(0.05)
        writer.transport.abort()  # the client vanishes mid-file
        deadline = asyncio.get_running_loop().time() + 5
        while not (left := await leftovers(app, config, server)).empty:
            assert asyncio.get_running_loop().time() < deadline, left
            await asyncio.sleep(0.1)
        reader.feed_eof()


async def test_stalled_upload_times_out(
    request: pytest.FixtureRequest, config: Config, aiohttp_client: ClientFactory
) -> None:
    client = await aiohttp_client(
        create_app(config.model_copy(update={"upload_idle_timeout": 0.5}))
    )
    alice = await People(client).create("alice")
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(
        f"POST /api/upload?filename=slow.txt HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {alice.token}\r\nContent-Length: 1000\r\n\r\nonly a little".encode()
    )
    await writer.drain()
    async with asyncio.timeout(5):
        status_line = await reader.readline()
    assert b" 408 " in status_line
    writer.close()
    server = request.getfixturevalue("s3_server") if config.effective_storage == "s3" else None
    assert (await leftovers(client.app, config, server)).empty


async def test_s3_cut_mid_upload(
    database_url: str,
    tmp_path: Any,
    s3_server: S3Server,
    s3_config_values: dict[str, Any],
    aiohttp_client: ClientFactory,
) -> None:
    endpoint = urlparse(s3_server.endpoint_url)
    assert endpoint.hostname is not None and endpoint.port is not None
    async with FaultProxy((endpoint.hostname, endpoint.port)) as proxy:
        config = Config(
            database_url=database_url,
            data_dir=tmp_path,
            s3_part_size=PART,
            max_upload_bytes=LIMIT,
            **{**s3_config_values, "s3_endpoint_url": proxy.url},
        )
        client = await aiohttp_client(create_app(config))
        alice = await People(client).create("alice")
        data = payload(LIMIT - 1)

        async def cut_after_first_part() -> AsyncIterator[bytes]:
            yield data[: PART + MiB]
            async with asyncio.timeout(10):  # the multipart upload exists: cut S3 now
                while not (await leftovers(client.app, config, s3_server)).uploads:
                    await asyncio.sleep(0.05)
            proxy.block()
            yield data[PART + MiB :]

        async def heal_once_cleanup_runs() -> None:
            # Unblock only once the failed write is being cleaned up, proving the abort
            # is retried until it gets through (storage's cleanup tasks are its own).
            cleanups = client.app[STORAGE]._cleanups._tasks  # type: ignore[attr-defined]
            async with asyncio.timeout(20):
                while not (proxy.blocked and cleanups):
                    await asyncio.sleep(0.02)
            proxy.unblock()

        healer = asyncio.create_task(heal_once_cleanup_runs())
        response = await alice.post("/api/upload?filename=big.bin", data=cut_after_first_part())
        error = await error_of(response, 503)
        assert error["code"] == "storage_unavailable" and response.headers["Retry-After"] == "5"
        await healer
        left = await leftovers(client.app, config, s3_server)
        assert (left.rows, left.uploads, left.objects) == (0, [], []), left


async def test_where_files_go(
    client: TestClient, people: People, check_leftovers: Callable[..., Awaitable[Leftovers]]
) -> None:
    alice = await people.create("alice")
    bob = await people.create("bob")
    channel_id = await make_channel(client, alice)  # bob is in the workspace, not the channel
    parts: list[Part] = [("channel_id", None, None, str(channel_id).encode())]
    parts.append(("file", "x.txt", None, b"x"))
    assert (await error_of(await post_parts(bob, parts), 403))["code"] == "not_channel_member"
    response = await post_parts(alice, [("file", "x.txt", None, b"x"), parts[0]])
    assert (await error_of(response, 422))["code"] == "invalid_request"  # fields first
    assert (await error_of(await post_parts(alice, parts[:1]), 422))["code"] == "no_files"
    elsewhere = await post_parts(alice, parts, params={"channel_id": channel_id + 1})
    problem = (await error_of(elsewhere, 422))["details"][0]
    assert problem == {"field": "channel_id", "problem": "differs from the query string"}

    async with client.app[POOL].acquire() as conn:  # alice joins a second workspace
        globex = await workspaces.ensure_workspace(conn, "globex", "Globex")
        await workspaces.upsert_membership(conn, globex.id, alice.user_id, "member")
    response = await alice.post("/api/upload?filename=x.txt", data=b"x")
    assert (await error_of(response, 422))["code"] == "workspace_required"
    assert (await check_leftovers()).empty
    response = await alice.post(
        f"/api/upload?filename=x.txt&workspace_id={alice.workspace_id}", data=b"x"
    )
    assert response.status == 201


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims huge dimensions but carries almost no data: a decompression bomb
    that is never decoded (its IDAT is cut short)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data).to_bytes(4, "big")
        return len(data).to_bytes(4, "big") + kind + data + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (width * 3 + 1) * 4)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows)


async def test_images_dimensions_and_thumbnails(client: TestClient, people: People) -> None:
    alice = await people.create("alice")
    rotated = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown portrait
    Image.new("RGB", (800, 200), (200, 10, 10)).save(rotated, "JPEG", exif=exif)
    parts: list[Part] = [
        ("file", "bomb.png", "image/png", png_header_only(30_000, 30_000)),
        ("file", "turned.jpg", "image/jpeg", rotated.getvalue()),
    ]
    response = await post_parts(alice, parts)
    body = await response.json()
    assert response.status == 201, body
    bomb, turned = body["attachments"]
    assert (bomb["width"], bomb["height"], bomb["mime_type"]) == (30_000, 30_000, "image/png")
    assert (turned["width"], turned["height"]) == (200, 800)
    async with client.app[POOL].acquire() as conn:
        rows = await conn.fetch(
            "SELECT id, thumbnail_key FROM attachments WHERE id = ANY($1::text[])",
            [bomb["id"], turned["id"]],
        )
    keys = {r["id"]: r["thumbnail_key"] for r in rows}
    assert keys[bomb["id"]] is None  # never decoded
    thumbnail = Image.open(io.BytesIO(await stored_bytes(client, keys[turned["id"]])))
    assert thumbnail.size == (100, 400)  # rotated like the original is shown


async def test_database_cut_before_the_rows_deletes_the_objects(
    database_url: str, tmp_path: Any, aiohttp_client: ClientFactory
) -> None:
    socket_dir = Path(parse_qs(urlparse(database_url).query)["host"][0])
    socket = next(p for p in socket_dir.glob(".s.PGSQL.*") if not p.name.endswith(".lock"))
    dbname = urlparse(database_url).path.lstrip("/")
    async with FaultProxy(str(socket)) as proxy:
        config = Config(
            database_url=f"postgresql://postgres@127.0.0.1:{proxy.port}/{dbname}",
            data_dir=tmp_path,
            db_pool_min=0,
        )
        client = await aiohttp_client(create_app(config))
        alice = await People(client).create("alice")

        async def cut_mid_body() -> AsyncIterator[bytes]:
            body, _ = encoded
            yield body[: len(body) // 2]
            proxy.block()  # authorised already; the rows can no longer be written
            yield body[len(body) // 2 :]

        encoded = encode_multipart([("file", "a.png", "image/png", png_bytes())])
        response = await alice.post(
            "/api/upload", data=cut_mid_body(), headers={"Content-Type": encoded[1]}
        )
        error = await error_of(response, 503)
        assert error["code"] == "database_unavailable"
        assert [info async for info in client.app[STORAGE].list()] == []  # thumbnail too
        proxy.unblock()
        assert (await leftovers(client.app, config, None)).empty


async def test_an_upload_has_a_deadline(
    request: pytest.FixtureRequest, config: Config, aiohttp_client: ClientFactory
) -> None:
    """However steadily the bytes trickle in, a request ends at ``max_upload_time``:
    the sweeper's thresholds (orphans, multipart uploads, temp files) rest on it."""
    client = await aiohttp_client(create_app(config.model_copy(update={"max_upload_time": 1})))
    alice = await People(client).create("alice")
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(
        f"POST /api/upload?filename=slow.txt HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {alice.token}\r\nContent-Length: 100000\r\n\r\n".encode()
    )

    async def trickle() -> None:
        with contextlib.suppress(OSError):
            for _ in range(100):  # well inside the idle timeout, every time
                writer.write(b"x" * 1000)
                await writer.drain()
                await asyncio.sleep(0.05)

    sender = asyncio.create_task(trickle())
    try:
        async with asyncio.timeout(5):
            status_line = await reader.readline()
            rest = b""
            while b"}}" not in rest and (chunk := await reader.read(65536)):
                rest += chunk
    finally:
        sender.cancel()
        writer.close()
    assert b" 408 " in status_line
    assert b'"upload_timeout"' in rest and b'"max_upload_seconds": 1' in rest
    server = request.getfixturevalue("s3_server") if config.effective_storage == "s3" else None
    assert (await leftovers(client.app, config, server)).empty


STALL_BOUND = 1.0  # ECHORA_STORAGE_TIMEOUT in the stall tests


# A PutObject that timed out may have stored its object: queued for deletion. A multipart
# upload whose creation went unanswered has no id to abort: the age-based pass is its net.
@pytest.mark.parametrize(("size", "queued"), [(1000, 1), (PART + MiB, 0)], ids=["put", "multipart"])
async def test_a_silent_store_answers_an_upload_503_within_the_bound(
    database_url: str,
    tmp_path: Path,
    s3_server: S3Server,
    s3_config_values: dict[str, Any],
    aiohttp_client: ClientFactory,
    size: int,
    queued: int,
) -> None:
    async with behind_proxy(
        database_url,
        tmp_path,
        s3_server,
        s3_config_values,
        aiohttp_client,
        s3_part_size=PART,
        max_upload_bytes=LIMIT,
        storage_timeout=STALL_BOUND,
        storage_idle_timeout=STALL_BOUND,
    ) as (proxy, client, config):
        alice = await People(client).create("alice")
        proxy.silence()  # accepts connections, never answers
        loop = asyncio.get_running_loop()
        started = loop.time()
        upload = asyncio.ensure_future(
            alice.post("/api/upload?filename=f.bin", data=io.BytesIO(payload(size)))
        )
        # Meanwhile the event loop serves others at once.
        while not upload.done():
            before = loop.time()
            health = await client.get("/healthz")
            assert health.status == 200 and loop.time() - before < 0.5
            await asyncio.sleep(0.1)
        response = await upload
        elapsed = loop.time() - started
        error = await error_of(response, 503)
        assert error["code"] == "storage_unavailable" and response.headers["Retry-After"] == "5"
        # The call's deadline, then at most as long again trying to clean up.
        assert elapsed < 2 * STALL_BOUND + 1.0, elapsed
        proxy.speak()
        # What the failed write may have left is queued for the next cleanup pass.
        async with client.app[POOL].acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM storage_deletions") == queued
        await sweep_once(client.app[POOL], client.app[STORAGE], config, dt.datetime.now(dt.UTC))
        assert (await leftovers(client.app, config, s3_server)).empty


async def test_an_outage_mid_upload_is_cleaned_by_the_first_pass_after_it(
    database_url: str,
    tmp_path: Path,
    s3_server: S3Server,
    s3_config_values: dict[str, Any],
    aiohttp_client: ClientFactory,
) -> None:
    async with behind_proxy(
        database_url,
        tmp_path,
        s3_server,
        s3_config_values,
        aiohttp_client,
        s3_part_size=PART,
        max_upload_bytes=LIMIT,
        storage_timeout=2,
    ) as (proxy, client, config):
        alice = await People(client).create("alice")
        kept = await alice.post(
            "/api/upload?filename=kept.bin", data=io.BytesIO(payload(PART + MiB, seed=1))
        )
        assert kept.status == 201
        before = await leftovers(client.app, config, s3_server)
        data = payload(LIMIT - 1)

        async def store_down_after_first_part() -> AsyncIterator[bytes]:
            yield data[: PART + MiB]
            async with asyncio.timeout(10):  # the multipart upload exists: the store goes
                while not (await leftovers(client.app, config, s3_server)).uploads:
                    await asyncio.sleep(0.05)
            proxy.block()  # and stays down while the upload's own abort is tried
            yield data[PART + MiB :]

        response = await alice.post(
            "/api/upload?filename=big.bin", data=store_down_after_first_part()
        )
        assert (await error_of(response, 503))["code"] == "storage_unavailable"
        storage, pool = client.app[STORAGE], client.app[POOL]
        async with pool.acquire() as conn:
            (queued,) = await conn.fetch("SELECT key, upload_id FROM storage_deletions")
        assert queued["upload_id"]

        # A pass while the store is still down aborts nothing, and loses nothing.
        down = await sweep_once(pool, storage, config, dt.datetime.now(dt.UTC))
        assert down.errors and not down.aborted_multipart_uploads
        proxy.unblock()  # the store is back; the upload is minutes, not an hour, old
        left = await leftovers(client.app, config, s3_server)
        assert len(left.uploads) == 1 and left.queued_deletions == 1
        assert left.uploads[0].endswith(queued["key"])

        later = dt.datetime.now(dt.UTC) + deletions.RETRY_MAX
        result = await sweep_once(pool, storage, config, later)
        assert result.aborted_multipart_uploads == 1 and result.errors == 0
        after = await leftovers(client.app, config, s3_server)
        assert after.uploads == [] and after.queued_deletions == 0
        assert (after.rows, after.objects) == (before.rows, before.objects)  # nothing else
        attachment = (await kept.json())["attachments"][0]
        download = await alice.get(attachment["url"])
        assert download.status == 200 and await download.read() == payload(PART + MiB, seed=1)
