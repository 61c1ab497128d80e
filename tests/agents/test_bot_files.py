"""Files straight to a bot: one multipart request, all or nothing, a message per file in the
direct message of sender and bot, so each file is one inbox entry (or one event on a
WebSocket-mode bot's socket). On both storage backends where storage matters."""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from support.bots import ack, make_bot, poll
from support.chat import assert_same_response, fetch
from support.people import People, Person
from support.seaweed import direct_s3_client

from echora_server.config import Config
from echora_server.files.upload_body import MULTIPART_OVERHEAD
from echora_server.files.uploads import UPLOADS

BOTH_BACKENDS = pytest.mark.parametrize("config", ["local", "s3"], indirect=True)
LIMIT = 64 * 1024  # the bot file cap here
UPLOAD_LIMIT = 4 * 1024  # the upload cap: below it, to tell the two apart
TIMEOUT = 10


@pytest.fixture
def config_overrides() -> dict[str, Any]:
    return {"bot_file_max_size": LIMIT, "max_upload_bytes": UPLOAD_LIMIT}


def files_form(*files: tuple[str, bytes]) -> aiohttp.FormData:
    form = aiohttp.FormData(default_to_multipart=True)
    for name, data in files:
        form.add_field("file", io.BytesIO(data), filename=name)
    return form


async def send(sender: Person, bot: Person, *files: tuple[str, bytes]) -> aiohttp.ClientResponse:
    response: aiohttp.ClientResponse = await sender.post(
        f"/api/bots/{bot.user_id}/files", data=files_form(*files)
    )
    return response


async def stored_objects(request: pytest.FixtureRequest, config: Config) -> list[str]:
    """What the store holds, asked of the store itself: files on disk (temp files included),
    or the bucket's objects and pending multipart uploads under this test's prefix."""
    if config.effective_storage == "local":
        root = config.files_dir
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    server = request.getfixturevalue("s3_server")
    async with direct_s3_client(server) as s3:
        prefix = f"{config.s3_prefix}/"
        listed = await s3.list_objects_v2(Bucket=server.bucket, Prefix=prefix)
        uploads = await s3.list_multipart_uploads(Bucket=server.bucket, Prefix=prefix)
    return sorted(
        [o["Key"] for o in listed.get("Contents", [])]
        + [f"upload:{u['Key']}" for u in uploads.get("Uploads", [])]
    )


async def rows(client: TestClient) -> dict[str, int]:
    return {
        table: await fetch(client, f"SELECT count(*) FROM {table}")
        for table in ("attachments", "messages", "inbox_entries", "channels", "channel_members")
    }


NOTHING = dict.fromkeys(
    ("attachments", "messages", "inbox_entries", "channels", "channel_members"), 0
)


@BOTH_BACKENDS
async def test_each_file_becomes_one_entry_the_bot_downloads(
    client: TestClient, people: People, request: pytest.FixtureRequest, config: Config
) -> None:
    owner = await people.create("olive")
    uma = await people.create("uma")
    bot = await make_bot(owner, "scanner", "poll")
    # Above the upload limit, under the bot file cap: this route has its own.
    files = [("a.txt", b"alpha" * 2000), ("b.bin", bytes(range(256)) * 40), ("c.txt", b"gamma")]
    response = await send(uma, bot, *files)
    assert response.status == 201, await response.text()
    messages = (await response.json())["messages"]
    assert [[a["filename"] for a in m["attachments"]] for m in messages] == [
        ["a.txt"],
        ["b.bin"],
        ["c.txt"],
    ]
    assert {m["author"]["id"] for m in messages} == {uma.user_id}
    (dm_id,) = {m["channel_id"] for m in messages}
    # The pair's DM, opened on first use: it is the one the DM API finds.
    dms = await (await uma.get(f"/api/workspaces/{uma.workspace_id}/dms")).json()
    assert [(d["id"], [u["username"] for u in d["members"]]) for d in dms["dms"]] == [
        (dm_id, ["scanner", "uma"])
    ]
    entries = await poll(bot, limit=100)
    # Its opening tells the bot of the DM (one member_added per member), then one entry a file.
    assert [e["type"] for e in entries] == ["channel.member_added"] * 2 + ["message.created"] * 3
    assert {e["body"]["channel"]["kind"] for e in entries[:2]} == {"dm"}
    for entry, (name, data) in zip(entries[2:], files, strict=True):
        assert entry["body"]["channel_id"] == dm_id
        (attachment,) = entry["body"]["message"]["attachments"]
        assert attachment["filename"] == name
        got = await bot.get(attachment["url"])
        assert (got.status, await got.read()) == (200, data)
    assert (await ack(bot, *(e["id"] for e in entries))).status == 200
    # Only the two of them may read the files, not even the workspace's owner.
    (first,) = messages[0]["attachments"]
    assert (await owner.get(first["url"])).status == 404
    assert len(await stored_objects(request, config)) == 3
    # The next send goes to the same DM, one entry for its one file.
    again = await send(uma, bot, ("d.txt", b"delta"))
    assert (await again.json())["messages"][0]["channel_id"] == dm_id
    assert [e["type"] for e in await poll(bot)] == ["message.created"]
    assert await fetch(client, "SELECT count(*) FROM channels") == 1


@BOTH_BACKENDS
async def test_a_file_over_the_cap_leaves_nothing_of_the_others(
    client: TestClient, people: People, request: pytest.FixtureRequest, config: Config
) -> None:
    owner = await people.create("olive")
    bot = await make_bot(owner, "scanner", "poll")
    assert await poll(bot) == []  # a bot's creation stages nothing
    files = [("ok1.txt", b"x" * 9000), ("ok2.txt", b"y" * 9000), ("big.bin", b"z" * (LIMIT + 1))]
    response = await send(owner, bot, *files)
    assert response.status == 413
    error = (await response.json())["error"]
    assert error["code"] == "file_too_large"
    assert error["details"]["limit_bytes"] == LIMIT
    assert await rows(client) == NOTHING  # no DM either: it opens with the first file
    assert await fetch(client, "SELECT count(*) FROM storage_deletions") == 0
    assert await stored_objects(request, config) == []
    assert await poll(bot) == []
    # Exactly at the cap is fine.
    response = await send(owner, bot, ("edge.bin", b"e" * LIMIT))
    assert response.status == 201, await response.text()


async def test_a_websocket_bot_gets_an_event_per_file(client: TestClient, people: People) -> None:
    owner = await people.create("olive")
    bot = await make_bot(owner, "listener", "websocket")
    ws = await client.ws_connect("/api/ws", headers=bot.auth)
    try:
        assert (await ws.receive_json(timeout=TIMEOUT))["type"] == "hello"
        response = await send(owner, bot, ("one.txt", b"1"), ("two.txt", b"2"))
        assert response.status == 201
        sent = [m["id"] for m in (await response.json())["messages"]]
        created = []
        while len(created) < 2:
            frame = await ws.receive_json(timeout=TIMEOUT)
            if frame["type"] == "message.created":
                created.append(frame["message"])
        assert [m["id"] for m in created] == sent
        assert [m["attachments"][0]["filename"] for m in created] == ["one.txt", "two.txt"]
        got = await bot.get(created[1]["attachments"][0]["url"])
        assert await got.read() == b"2"
    finally:
        await ws.close()
    assert await fetch(client, "SELECT count(*) FROM inbox_entries") == 0


async def test_concurrent_first_sends_share_one_dm(client: TestClient, people: People) -> None:
    owner = await people.create("olive")
    bot = await make_bot(owner, "scanner", "poll")
    responses = await asyncio.gather(*(send(owner, bot, (f"{i}.txt", b"x")) for i in range(4)))
    assert [r.status for r in responses] == [201] * 4
    channel_ids = {(await r.json())["messages"][0]["channel_id"] for r in responses}
    assert len(channel_ids) == 1
    assert await fetch(client, "SELECT count(*) FROM channels") == 1
    types = [e["type"] for e in await poll(bot, limit=100)]
    assert types.count("message.created") == 4 and types.count("channel.member_added") == 2


async def test_names_are_sanitised_as_uploads_are(client: TestClient, people: People) -> None:
    owner = await people.create("olive")
    bot = await make_bot(owner, "scanner", "poll")
    long_name = "r" * 150 + ".pdf"
    response = await send(owner, bot, ("../../etc/pass\u202ewd.txt", b"a"), (long_name, b"b"))
    assert response.status == 201, await response.text()
    names = [m["attachments"][0]["filename"] for m in (await response.json())["messages"]]
    assert "/" not in names[0] and "\u202e" not in names[0]
    assert len(names[1]) == 100 and names[1].endswith(".pdf")


async def test_refusals_leave_nothing(
    client: TestClient, people: People, request: pytest.FixtureRequest, config: Config
) -> None:
    owner = await people.create("olive")
    bot = await make_bot(owner, "scanner", "poll")
    stranger = await people.create("sam", workspace="elsewhere")
    elsewhere_bot = await make_bot(stranger, "theirs", "poll")
    # Another workspace's bot, a user who is no bot: as a bot that does not exist.
    for target in (elsewhere_bot.user_id, owner.user_id):
        await assert_same_response(
            owner,
            "POST",
            f"/api/bots/{target}/files",
            "/api/bots/999999/files",
            data=files_form(("a.txt", b"a")),
        )
    await assert_same_response(
        stranger,
        "POST",
        f"/api/bots/{bot.user_id}/files",
        "/api/bots/999999/files",
        data=files_form(("a.txt", b"a")),
    )
    path = f"/api/bots/{bot.user_id}/files"
    as_json = await owner.post(path, json={"file": "a"})
    assert as_json.status == 415
    assert (await as_json.json())["error"]["code"] == "unsupported_media_type"
    empty = await owner.post(path, data=aiohttp.FormData(default_to_multipart=True))
    assert empty.status == 422
    assert (await empty.json())["error"]["code"] == "no_files"
    targeted = aiohttp.FormData()
    targeted.add_field("channel_id", "1")
    targeted.add_field("file", io.BytesIO(b"a"), filename="a.txt")
    assert (await owner.post(path, data=targeted)).status == 422
    to_itself = await bot.post(path, data=files_form(("a.txt", b"a")))
    assert to_itself.status == 422
    assert (await to_itself.json())["error"]["code"] == "own_bot"
    # Counted as the channels, members and entries the two bots' creation made: none.
    assert await rows(client) == NOTHING
    assert await stored_objects(request, config) == []


async def test_headers_over_any_possible_batch_are_refused_before_the_body(
    client: TestClient, people: People
) -> None:
    """With ``Expect: 100-continue``: the bot file cap, not the upload one, sets the bound."""
    owner = await people.create("olive")
    bot = await make_bot(owner, "scanner", "poll")
    limit = client.app[UPLOADS].limits.max_files * LIMIT + MULTIPART_OVERHEAD
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        head = "\r\n".join(
            [
                f"POST /api/bots/{bot.user_id}/files HTTP/1.1",
                "Host: x",
                f"Authorization: Bearer {owner.token}",
                "Content-Type: multipart/form-data; boundary=x",
                f"Content-Length: {limit + 1}",
                "Expect: 100-continue",
                "",
                "",
            ]
        )
        writer.write(head.encode())
        await writer.drain()
        async with asyncio.timeout(TIMEOUT):
            answer = await reader.read(65536)
    finally:
        writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 413 "), answer
    body = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert body["error"]["code"] == "payload_too_large"
    assert body["error"]["details"] == {"limit_bytes": limit}
