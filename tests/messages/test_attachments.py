"""Linking uploads to messages: REST, WebSocket and the one-shot multipart send, on both
storage backends where storage matters (local disk and S3, a real SeaweedFS).

Invariant 5 (link once, same scope) and 4 (all or nothing) are checked the way an operator
would see them: message and attachment rows, queued deletions, and stored objects.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import secrets
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from PIL import Image
from support.chat import fetch, make_channel
from support.people import People, Person
from support.recording import recorder

from echora_server.db.pool import POOL
from echora_server.realtime.events import MESSAGE_CREATED
from echora_server.storage.base import StorageError
from echora_server.storage.factory import STORAGE

TIMEOUT = 10
BOTH_BACKENDS = pytest.mark.parametrize("config", ["local", "s3"], indirect=True)


def png_bytes(width: int = 120, height: int = 80) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (30, 120, 200)).save(out, "PNG")
    return out.getvalue()


async def upload(
    person: Person, *files: tuple[str, str, bytes], channel_id: int | None = None
) -> list[dict[str, Any]]:
    """POST /api/upload; ``files`` are (name, content type, bytes)."""
    form = aiohttp.FormData()
    if channel_id is not None:
        form.add_field("channel_id", str(channel_id))
    else:
        form.add_field("workspace_id", str(person.workspace_id))
    for name, content_type, data in files:
        form.add_field("file", io.BytesIO(data), filename=name, content_type=content_type)
    response = await person.post("/api/upload", data=form)
    body = await response.json()
    assert response.status == 201, body
    return list(body["attachments"])


async def upload_text(person: Person, text: str = "hello", **kw: Any) -> dict[str, Any]:
    (attachment,) = await upload(person, ("notes.txt", "text/plain", text.encode()), **kw)
    return attachment


async def send(person: Person, channel_id: int, **body: Any) -> aiohttp.ClientResponse:
    response: aiohttp.ClientResponse = await person.post(
        f"/api/channels/{channel_id}/messages", json=body
    )
    return response


async def error_code(response: aiohttp.ClientResponse, status: int) -> str:
    body = await response.json()
    assert response.status == status, body
    return str(body["error"]["code"])


async def count(client: TestClient, table: str) -> int:
    return int(await fetch(client, f"SELECT count(*) FROM {table}"))


async def stored_keys(client: TestClient) -> list[str]:
    return sorted([info.key async for info in client.app[STORAGE].list()])


async def stored_bytes(client: TestClient, key: str) -> bytes:
    async with await client.app[STORAGE].open(key) as reader:
        return b"".join([chunk async for chunk in reader.chunks()])


async def row_of(client: TestClient, attachment_id: str) -> Any:
    async with client.app[POOL].acquire() as conn:
        return await conn.fetchrow("SELECT * FROM attachments WHERE id = $1", attachment_id)


async def connect(person: Person, query: str = "") -> aiohttp.ClientWebSocketResponse:
    ws = await person.client.ws_connect(f"/api/ws{query}", headers=person.auth)
    assert (await ws.receive_json(timeout=TIMEOUT))["type"] == "hello"
    return ws


async def frame_of(ws: aiohttp.ClientWebSocketResponse, kind: str, **match: Any) -> dict[str, Any]:
    """The next frame of this type (and these fields); earlier membership events and the
    like, published before the test acted, are skipped."""
    while True:
        frame = dict(await ws.receive_json(timeout=TIMEOUT))
        if frame["type"] == kind and all(frame.get(k) == v for k, v in match.items()):
            return frame


@BOTH_BACKENDS
async def test_websocket_send_links_uploads_and_members_receive_them(
    client: TestClient, people: People
) -> None:
    alice, bob = await people.create("alice"), await people.create("bob")
    general = (await make_channel(alice, "general"))["id"]
    await bob.post(f"/api/channels/{general}/join")
    image, text = png_bytes(), b"minutes of the meeting\n"
    picture, notes = await upload(
        alice, ("p.png", "image/png", image), ("m.txt", "text/plain", text), channel_id=general
    )
    ws_alice, ws_bob = await connect(alice), await connect(bob)

    ids = [notes["id"], picture["id"]]  # not the upload's order: the sender's is kept
    await ws_alice.send_json(
        {"type": "message.send", "channel_id": general, "attachment_ids": ids, "ref": "r1"}
    )
    ack = await frame_of(ws_alice, "message.ack", ref="r1")
    message = ack["message"]
    assert message["content"] == "" and message["attachments"] == [notes, picture]
    assert (picture["width"], picture["height"], picture["mime_type"]) == (120, 80, "image/png")
    assert "thumbnail_url" not in notes
    created = await frame_of(ws_bob, "message.created")
    assert created == {"type": "message.created", "channel_id": general, "message": message}

    for attachment, data in ((notes, text), (picture, image)):
        row = await row_of(client, attachment["id"])
        assert row["message_id"] == message["id"]
        stored = await stored_bytes(client, row["storage_key"])
        assert hashlib.sha256(stored).hexdigest() == attachment["sha256"]
        assert hashlib.sha256(data).hexdigest() == attachment["sha256"]
        response = await bob.get(attachment["url"])  # another member downloads it
        body = await response.read()
        assert response.status == 200
        assert hashlib.sha256(body).hexdigest() == attachment["sha256"]
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Content-Security-Policy"] == "sandbox; default-src 'none'"
        assert response.headers["Cache-Control"] == "private, max-age=86400, immutable"
        assert response.headers["ETag"] == f'"{attachment["sha256"]}"'
        disposition = "inline" if attachment is picture else "attachment"
        assert response.headers["Content-Disposition"].startswith(disposition)
        assert (
            f"filename*=UTF-8''{attachment['filename']}" in response.headers["Content-Disposition"]
        )

    history = await (await bob.get(f"/api/channels/{general}/messages")).json()
    assert history["messages"] == [message]
    replay = await connect(bob, f"?after_id={message['id'] - 1}")
    assert (await frame_of(replay, "message.created"))["message"] == message
    for ws in (ws_alice, ws_bob, replay):
        await ws.close()


async def test_rest_post_with_attachments_links_and_edits(
    client: TestClient, people: People
) -> None:
    alice = await people.create("alice")
    general = (await make_channel(alice, "general"))["id"]
    first, second = await upload_text(alice, "one"), await upload_text(alice, "two")
    links = [
        {"url": "https://example.com/spec?v=2#top", "title": "  The spec  "},
        {"url": "http://intranet.example/wiki"},
    ]
    response = await send(
        alice, general, content="see", attachment_ids=[second["id"], first["id"]], links=links
    )
    message = await response.json()
    assert response.status == 201, message
    assert message["attachments"] == [second, first]
    assert message["links"] == [
        {"url": "https://example.com/spec?v=2#top", "title": "The spec"},
        {"url": "http://intranet.example/wiki", "title": ""},
    ]
    history = await (await alice.get(f"/api/channels/{general}/messages")).json()
    assert history["messages"] == [message]

    # Only links, no text: allowed too. Text may be edited away while files or links stay.
    links_only = await send(alice, general, links=[{"url": "https://example.org"}])
    assert links_only.status == 201
    edited = await alice.request("PATCH", f"/api/messages/{message['id']}", json={"content": ""})
    body = await edited.json()
    assert edited.status == 200, body
    assert (body["content"], body["attachments"], body["links"]) == (
        "",
        [second, first],
        message["links"],
    )
    assert await error_code(await send(alice, general, content=" "), 422) == "invalid_request"


INVALID_LINKS: list[list[dict[str, Any]]] = [
    [{"url": "javascript:alert(1)"}],
    [{"url": "ftp://example.com/file"}],
    [{"url": "https://"}],
    [{"url": "https://user:secret@example.com/"}],  # shows one host, opens another
    [{"url": "https://example.com/a b"}],
    [{"url": "https://exa\u0000mple.com"}],
    [{"url": "https://[::1/"}],
    [{"url": "https://example.com/" + "x" * 2000}],
    [{"url": "https://example.com", "title": "t" * 201}],
    [{"url": "https://example.com", "title": "\u202eevil"}],
    [{"url": "https://example.com", "extra": 1}],
    [{"url": f"https://example.com/{i}"} for i in range(11)],
]


async def test_invalid_links_are_refused(client: TestClient, people: People) -> None:
    alice = await people.create("alice")
    general = (await make_channel(alice, "general"))["id"]
    for links in INVALID_LINKS:
        response = await send(alice, general, content="x", links=links)
        assert await error_code(response, 422) == "invalid_request", links
    assert await count(client, "messages") == 0


async def test_only_own_unlinked_attachments_of_the_scope_link(
    client: TestClient, people: People
) -> None:
    alice, bob = await people.create("alice"), await people.create("bob")
    mallory = await people.create("mallory", workspace="globex")
    general = (await make_channel(alice, "general"))["id"]
    other = (await make_channel(alice, "other"))["id"]
    await bob.post(f"/api/channels/{general}/join")
    mine = await upload_text(alice)
    scoped = await upload_text(alice, channel_id=other)  # may only go into #other
    bobs = await upload_text(bob)
    malloys = await upload_text(mallory)
    events = recorder(client)
    events.events.clear()

    refusals = []
    for ids in (
        [bobs["id"]],
        [malloys["id"]],
        [secrets.token_urlsafe(16)],  # no such attachment
        ["not an id at all"],
        [scoped["id"]],
        [mine["id"], bobs["id"]],  # one bad id spoils the whole message
    ):
        response = await send(alice, general, content="x", attachment_ids=ids)
        refusals.append((response.status, await response.read()))
    assert len(set(refusals)) == 1, refusals  # no hint of which reason applied
    status, body = refusals[0]
    assert status == 422 and b'"attachment_unavailable"' in body
    assert (await count(client, "messages"), events.events) == (0, [])
    assert (await row_of(client, mine["id"]))["message_id"] is None  # rolled back

    ws = await connect(alice)
    await ws.send_json(
        {
            "type": "message.send",
            "channel_id": general,
            "content": "x",
            "attachment_ids": [bobs["id"]],
            "ref": 7,
        }
    )
    error = await frame_of(ws, "error", ref=7)
    assert error["error"]["code"] == "attachment_unavailable"
    await ws.close()

    scoped_ok = await send(alice, other, attachment_ids=[scoped["id"]])
    assert scoped_ok.status == 201
    linked = await send(alice, general, attachment_ids=[mine["id"]])
    assert linked.status == 201
    again = await send(alice, general, content="again", attachment_ids=[mine["id"]])
    assert await error_code(again, 409) == "attachment_already_linked"
    bobs_linked = await send(bob, general, attachment_ids=[bobs["id"]])
    assert bobs_linked.status == 201
    # Linked or not, someone else's attachment answers as before: nothing is revealed.
    stolen = await send(alice, general, content="x", attachment_ids=[bobs["id"]])
    assert (stolen.status, await stolen.read()) == (status, body)

    duplicated = await send(alice, general, attachment_ids=[mine["id"], mine["id"]])
    assert await error_code(duplicated, 422) == "invalid_request"
    too_many = await send(alice, general, attachment_ids=[secrets.token_urlsafe(16)] * 11)
    assert await error_code(too_many, 422) == "invalid_request"
    assert await count(client, "messages") == 3
    assert len(recorder(client).of_type(MESSAGE_CREATED)) == 3


async def test_concurrent_links_of_one_attachment_have_one_winner(
    client: TestClient, people: People
) -> None:
    alice = await people.create("alice")
    general = (await make_channel(alice, "general"))["id"]
    contested = await upload_text(alice)
    own = [await upload_text(alice, f"own {i}") for i in range(10)]

    async def attempt(i: int) -> tuple[int, dict[str, Any]]:
        response = await send(
            alice, general, content=f"try {i}", attachment_ids=[own[i]["id"], contested["id"]]
        )
        return response.status, await response.json()

    results = await asyncio.gather(*(attempt(i) for i in range(10)))
    assert sorted(status for status, _ in results) == [201] + [409] * 9
    assert {b["error"]["code"] for s, b in results if s == 409} == {"attachment_already_linked"}
    (winner,) = [body for status, body in results if status == 201]
    assert await count(client, "messages") == 1
    assert (await row_of(client, contested["id"]))["message_id"] == winner["id"]
    linked = await fetch(client, "SELECT count(*) FROM attachments WHERE message_id IS NOT NULL")
    assert linked == 2  # the winner's two; every loser's own upload is unlinked again
    assert len(recorder(client).of_type(MESSAGE_CREATED)) == 1


async def test_retried_client_id_returns_the_message_and_links_nothing(
    client: TestClient, people: People
) -> None:
    alice = await people.create("alice")
    general = (await make_channel(alice, "general"))["id"]
    first, later = await upload_text(alice, "1"), await upload_text(alice, "2")
    posted = await send(alice, general, client_id="c-1", attachment_ids=[first["id"]])
    message = await posted.json()
    assert posted.status == 201 and message["attachments"] == [first]
    for ids in ([first["id"]], [later["id"]]):
        retry = await send(alice, general, client_id="c-1", attachment_ids=ids)
        assert retry.status == 200
        assert await retry.json() == message
    assert (await row_of(client, later["id"]))["message_id"] is None
    assert await count(client, "messages") == 1


def one_shot_form(
    content: str | None, *files: tuple[str, bytes], client_id: str | None = None
) -> aiohttp.FormData:
    """What ``curl -F content=… -F file=@…`` sends (multipart even without files)."""
    form = aiohttp.FormData(default_to_multipart=True)
    if content is not None:
        form.add_field("content", content)
    if client_id is not None:
        form.add_field("client_id", client_id)
    for name, data in files:
        form.add_field("file", io.BytesIO(data), filename=name)
    return form


@BOTH_BACKENDS
async def test_one_shot_multipart_send(client: TestClient, people: People) -> None:
    alice = await people.create("alice")
    general = (await make_channel(alice, "general"))["id"]
    path = f"/api/channels/{general}/messages"
    report, photo = b"%PDF-1.4 not really\n" * 50, png_bytes(64, 64)
    form = one_shot_form("see attached", ("report.pdf", report), ("p.png", photo), client_id="k")
    response = await alice.post(path, data=form)
    message = await response.json()
    assert response.status == 201, message
    assert message["content"] == "see attached" and message["client_id"] == "k"
    assert [a["filename"] for a in message["attachments"]] == ["report.pdf", "p.png"]
    for attachment, data in zip(message["attachments"], (report, photo), strict=True):
        assert attachment["sha256"] == hashlib.sha256(data).hexdigest()
        row = await row_of(client, attachment["id"])
        assert (row["message_id"], row["channel_id"]) == (message["id"], general)
        assert await stored_bytes(client, row["storage_key"]) == data
    keys = await stored_keys(client)
    assert len(keys) == 3  # two files and the PNG's thumbnail
    assert [e.data["message"] for e in recorder(client).of_type(MESSAGE_CREATED)] == [message]

    again = one_shot_form("see attached", ("report.pdf", report), client_id="k")
    retry = await alice.post(path, data=again)
    assert retry.status == 200 and await retry.json() == message
    only_text = await alice.post(path, data=one_shot_form("just words"))
    assert only_text.status == 201 and (await only_text.json())["attachments"] == []
    files_only = await alice.post(path, data=one_shot_form(None, ("a.txt", b"a")))
    assert files_only.status == 201
    assert (await count(client, "attachments"), len(await stored_keys(client))) == (3, 4)


@BOTH_BACKENDS
async def test_failed_one_shot_send_leaves_nothing(client: TestClient, people: People) -> None:
    alice, bob = await people.create("alice"), await people.create("bob")
    mallory = await people.create("mallory", workspace="globex")
    general = (await make_channel(alice, "general"))["id"]
    secret = (await make_channel(alice, "secret", private=True))["id"]
    file = ("a.txt", b"some bytes")

    async def refused(person: Person, channel_id: int, form: aiohttp.FormData) -> str:
        response = await person.post(f"/api/channels/{channel_id}/messages", data=form)
        body = await response.json()
        assert response.status >= 400, body
        return f"{response.status} {body['error']['code']}"

    assert await refused(bob, secret, one_shot_form("x", file)) == "404 not_found"
    assert await refused(mallory, general, one_shot_form("x", file)) == "404 not_found"
    assert await refused(bob, general, one_shot_form("x", file)) == "403 not_channel_member"
    bad_id = one_shot_form("x", file, client_id="has space")
    assert await refused(alice, general, bad_id) == "422 invalid_request"
    assert await refused(alice, general, one_shot_form("")) == "422 invalid_request"
    many = one_shot_form("x", *[(f"{i}.txt", b"x") for i in range(11)])
    assert await refused(alice, general, many) == "413 too_many_files"
    mismatch = one_shot_form("x", file, ("cat.png", b"<html><script>1</script>"))
    assert await refused(alice, general, mismatch) == "415 type_mismatch"

    # The files are stored and the message then fails: the rows and objects go with it.
    async with client.app[POOL].acquire() as conn:
        await conn.execute(
            """
            CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS
            $$ BEGIN RAISE EXCEPTION 'refused'; END $$;
            CREATE TRIGGER refuse_messages BEFORE INSERT ON messages
            FOR EACH ROW EXECUTE FUNCTION refuse();
            """
        )
    photo = one_shot_form("x", file, ("p.png", png_bytes()))
    assert await refused(alice, general, photo) == "500 internal_error"

    assert await count(client, "messages") == 0
    assert await count(client, "attachments") == 0
    assert await count(client, "storage_deletions") == 0
    assert await stored_keys(client) == []
    assert recorder(client).of_type(MESSAGE_CREATED) == []


@BOTH_BACKENDS
async def test_deleting_a_message_deletes_its_files(client: TestClient, people: People) -> None:
    alice = await people.create("alice")
    general = (await make_channel(alice, "general"))["id"]
    kept = await upload_text(alice, "not in the message")
    files = await upload(alice, ("p.png", "image/png", png_bytes()), ("t.txt", "text/plain", b"t"))
    response = await send(alice, general, attachment_ids=[a["id"] for a in files])
    message = await response.json()
    assert len(await stored_keys(client)) == 4  # kept, the PNG, its thumbnail, the text

    assert (await alice.delete(f"/api/messages/{message['id']}")).status == 204
    kept_row = await row_of(client, kept["id"])
    assert await stored_keys(client) == [kept_row["storage_key"]]
    assert await count(client, "attachments") == 1
    assert await count(client, "storage_deletions") == 0


async def test_objects_storage_refuses_to_delete_stay_queued(
    client: TestClient, people: People, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = await people.create("alice")
    general = (await make_channel(alice, "general"))["id"]
    files = await upload(alice, ("p.png", "image/png", png_bytes()), ("t.txt", "text/plain", b"t"))
    message = await (await send(alice, general, attachment_ids=[a["id"] for a in files])).json()
    rows = [await row_of(client, a["id"]) for a in files]
    storage = client.app[STORAGE]
    real_delete = storage.delete

    async def flaky_delete(key: str) -> None:
        if key == rows[0]["storage_key"]:
            raise StorageError("storage is down")
        await real_delete(key)

    monkeypatch.setattr(storage, "delete", flaky_delete)
    assert (await alice.delete(f"/api/messages/{message['id']}")).status == 204
    assert await count(client, "attachments") == 0  # rows first, whatever storage does
    queued = await fetch(client, "SELECT array_agg(key) FROM storage_deletions")
    assert queued == [rows[0]["storage_key"]]  # left for the sweeper
    assert await stored_keys(client) == [rows[0]["storage_key"]]  # the others went at once
