"""The audit log: every step of a file's life recorded with who, which request and from
where, downloads and refused tokens tallied per hour, readable by workspace admins only,
filtered and paged, never holding a secret or a file's bytes, pruned after its retention."""

from __future__ import annotations

import datetime as dt
import io
import json
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient
from support.chat import make_channel
from support.people import People, Person
from support.processes import echora_env, run_echora
from support.tickets import finalize, send, ticket_for

from echora_server.audit.tally import TALLY
from echora_server.config import CONFIG
from echora_server.db.pool import POOL
from echora_server.files.cleanup import sweep_once
from echora_server.storage.factory import STORAGE
from echora_server.tickets.service import TICKETS

BACKENDS = ("local", "s3")
PASSWORD = "correct horse battery staple"  # support.people's


async def flush(client: TestClient) -> None:
    await client.app[TALLY].flush(client.app[POOL])


async def audit(person: Person, **query: Any) -> dict[str, Any]:
    response = await person.get(
        f"/api/workspaces/{person.workspace_id}/audit",
        params={k: str(v) for k, v in query.items()},
    )
    body = await response.json()
    assert response.status == 200, body
    return body  # type: ignore[no-any-return]


async def actions(person: Person, **query: Any) -> list[tuple[str, str | None, int | None]]:
    """(action, attachment, actor), oldest first."""
    entries = (await audit(person, limit=200, **query))["entries"]
    return [(e["action"], e["attachment_id"], e["actor_id"]) for e in reversed(entries)]


async def all_rows(client: TestClient) -> list[dict[str, Any]]:
    async with client.app[POOL].acquire() as conn:
        return [dict(r) for r in await conn.fetch("SELECT * FROM audit_log ORDER BY id")]


async def test_a_files_life_is_recorded_step_by_step(client: TestClient, people: People) -> None:
    alice, bob = await people.create("alice", role="admin"), await people.create("bob")
    channel_id = (await make_channel(alice, "general"))["id"]
    secret_bytes = b"the content itself must never be in the log " * 20
    sent = await alice.post(
        "/api/upload",
        params={"filename": "plan.txt"},
        data=io.BytesIO(secret_bytes),
        headers={"X-Request-ID": "upload-request-0001"},
    )
    (attachment,) = (await sent.json())["attachments"]
    file_id = attachment["id"]
    posted = await alice.post(
        f"/api/channels/{channel_id}/messages",
        json={"content": "the plan", "attachment_ids": [file_id]},
        headers={"X-Request-ID": "link-request-0001"},
    )
    message = await posted.json()
    assert posted.status == 201, message
    for n in range(3):
        got = await bob.get(attachment["url"], headers={"X-Request-ID": f"dl-request-{n:04d}"})
        assert got.status == 200 and await got.read() == secret_bytes
    assert (await bob.request("HEAD", attachment["url"])).status == 200  # no bytes: not counted
    await flush(client)
    deleted = await alice.delete(
        f"/api/messages/{message['id']}", headers={"X-Request-ID": "delete-request-0001"}
    )
    assert deleted.status == 204

    entries = (await audit(alice, attachment_id=file_id))["entries"]
    by_action = {e["action"]: e for e in entries}
    assert [e["action"] for e in reversed(entries)] == [
        "file.uploaded",
        "file.attached",
        "file.downloaded",
        "file.deleted",
    ]
    uploaded = by_action["file.uploaded"]
    assert (uploaded["actor_id"], uploaded["request_id"]) == (alice.user_id, "upload-request-0001")
    assert uploaded["client_addr"] == "127.0.0.1"
    assert uploaded["details"]["size"] == len(secret_bytes)
    assert uploaded["details"]["filename"] == "plan.txt"
    attached = by_action["file.attached"]
    assert attached["request_id"] == "link-request-0001"
    assert attached["details"] == {"message_id": message["id"], "channel_id": channel_id}
    downloaded = by_action["file.downloaded"]
    assert (downloaded["actor_id"], downloaded["count"]) == (bob.user_id, 3)
    assert downloaded["request_id"] == "dl-request-0002"  # the last one counted
    gone = by_action["file.deleted"]
    assert (gone["actor_id"], gone["request_id"]) == (alice.user_id, "delete-request-0001")
    assert gone["details"]["message_id"] == message["id"]

    # Nothing secret: no token, no password, no byte of the file, in any column.
    dump = json.dumps(await all_rows(client), default=str)
    for secret in (alice.token, bob.token, PASSWORD, secret_bytes[:20].decode()):
        assert secret not in dump


async def test_downloads_are_tallied_per_file_user_and_hour(
    client: TestClient, people: People
) -> None:
    alice, bob = await people.create("alice", role="admin"), await people.create("bob")
    channel_id = (await make_channel(alice, "general"))["id"]
    form = aiohttp.FormData(default_to_multipart=True)
    form.add_field("file", io.BytesIO(b"popular"), filename="popular.txt")
    sent = await alice.post(f"/api/channels/{channel_id}/messages", data=form)
    (attachment,) = (await sent.json())["attachments"]
    tally = client.app[TALLY]
    for person, times in ((alice, 2), (bob, 5)):
        for _ in range(times):
            assert (await person.get(attachment["url"])).status == 200
    await flush(client)
    assert (await bob.get(attachment["url"], headers={"Range": "bytes=0-2"})).status == 206
    await flush(client)  # a second flush adds to the same hour's row
    hour = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
    later = hour + dt.timedelta(hours=1, minutes=5)
    tally._clock = lambda: later
    assert (await bob.get(attachment["url"])).status == 200
    await flush(client)
    rows = (await audit(alice, action="file.downloaded"))["entries"]
    counts = sorted(
        (e["actor_id"], dt.datetime.fromisoformat(e["at"]).hour, e["count"]) for e in rows
    )
    assert counts == sorted(
        [(alice.user_id, hour.hour, 2), (bob.user_id, hour.hour, 6), (bob.user_id, later.hour, 1)]
    )


async def test_a_tickets_steps_and_refusals_are_recorded(
    client: TestClient, people: People
) -> None:
    alice = await people.create("alice", role="admin")
    data = b"ticket bytes " * 100
    ticket = await ticket_for(alice, len(data))
    assert (await send(client, ticket, data)).status == 200
    assert (await finalize(alice, ticket)).status == 201
    fake = b"<html></html>" + b" " * 50
    refused = await ticket_for(alice, len(fake), content_type="image/png")
    assert (await send(client, refused, fake)).status == 415
    wrong = {**ticket, "id": refused["id"]}
    assert (await finalize(alice, wrong)).status == 404  # another ticket's token
    await flush(client)
    assert await actions(alice, attachment_id=ticket["id"]) == [
        ("ticket.created", ticket["id"], alice.user_id),
        ("upload.received", ticket["id"], alice.user_id),
        ("upload.finalized", ticket["id"], alice.user_id),
    ]
    steps = (await audit(alice, attachment_id=refused["id"]))["entries"]
    assert [e["action"] for e in reversed(steps)] == ["ticket.created", "upload.refused"]
    assert steps[0]["details"]["reason"] == "type_mismatch"
    refusals = [
        r for r in await all_rows(client) if r["action"] == "token.refused"
    ]  # a ticket's token is refused to its owner: the owner is named, the ticket is not
    assert [(r["actor_id"], json.loads(r["details"])) for r in refusals] == [
        (alice.user_id, {"reason": "upload_not_found", "kind": "upload_ticket"})
    ]
    dump = json.dumps(await all_rows(client), default=str)
    assert ticket["token"] not in dump and refused["token"] not in dump

    # Abandoned: the sweep records its expiry.
    never_sent = await ticket_for(alice, 10)
    app = client.app
    after = dt.datetime.fromisoformat(never_sent["finalize_before"]) + dt.timedelta(seconds=1)
    app[TICKETS].clock = lambda: after
    result = await sweep_once(app[POOL], app[STORAGE], app[CONFIG], after)
    assert result.expired_upload_tickets == 2  # and the refused one, never finalized
    expired = await actions(alice, action="ticket.expired")
    assert sorted(expired) == sorted(
        [
            ("ticket.expired", never_sent["id"], alice.user_id),
            ("ticket.expired", refused["id"], alice.user_id),
        ]
    )


async def test_expired_unlinked_files_are_recorded_as_swept(
    client: TestClient, people: People
) -> None:
    alice = await people.create("alice", role="admin")
    sent = await alice.post("/api/upload", params={"filename": "draft.txt"}, data=b"never sent")
    (attachment,) = (await sent.json())["attachments"]
    app = client.app
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)
    result = await sweep_once(app[POOL], app[STORAGE], app[CONFIG], later)
    assert result.expired_unlinked_attachments == 1
    assert await actions(alice, attachment_id=attachment["id"]) == [
        ("file.uploaded", attachment["id"], alice.user_id),
        ("file.swept", attachment["id"], None),
    ]


async def test_refused_tokens_are_tallied_without_the_token(
    client: TestClient, people: People
) -> None:
    alice = await people.create("alice", role="admin")
    restricted = await alice.post(
        "/api/tokens", json={"name": "ci", "workspace_id": alice.workspace_id}
    )
    token = (await restricted.json())["token"]
    bogus = "echt_" + "A" * 43
    for _ in range(4):
        response = await client.get("/api/me", headers={"Authorization": f"Bearer {bogus}"})
        assert response.status == 401
    assert (await client.get("/api/me", headers={"Authorization": "Bearer junk"})).status == 401
    token_id = (await (await alice.get("/api/tokens")).json())["tokens"][-1]["id"]
    assert (await alice.delete(f"/api/tokens/{token_id}")).status == 204
    assert (await client.get("/api/me", headers={"Authorization": f"Bearer {token}"})).status == 401
    await flush(client)
    # The revoked token was the workspace's: its admins see it.
    (revoked,) = (await audit(alice, action="token.refused"))["entries"]
    assert (revoked["actor_id"], revoked["details"]["reason"]) == (alice.user_id, "token_revoked")
    # Unknown tokens belong to no workspace: the operator reads them with the command.
    rows = [r for r in await all_rows(client) if r["workspace_id"] is None]
    assert sorted((r["count"], json.loads(r["details"])["reason"]) for r in rows) == [
        (5, "invalid_token")
    ]
    dump = json.dumps(await all_rows(client), default=str)
    assert bogus not in dump and token not in dump and "junk" not in dump
    env = echora_env(ECHORA_DATABASE_URL=client.app[CONFIG].database_url.get_secret_value())
    printed = run_echora("audit", "--server-level", "--action", "token.refused", env=env)
    assert printed.returncode == 0, printed.stderr
    (line,) = printed.stdout.splitlines()
    assert json.loads(line)["count"] == 5


async def test_only_admins_read_it_filtered_and_paged(client: TestClient, people: People) -> None:
    alice = await people.create("alice", role="admin")
    bob = await people.create("bob")
    mallory = await people.create("mallory", workspace="globex", role="owner")
    for n in range(5):
        sent = await alice.post("/api/upload", params={"filename": f"{n}.txt"}, data=b"x")
        assert sent.status == 201
    sent = await bob.post("/api/upload", params={"filename": "bob.txt"}, data=b"y")
    assert sent.status == 201
    path = f"/api/workspaces/{alice.workspace_id}/audit"
    assert (await bob.get(path)).status == 403
    outsider = await mallory.get(path)
    assert outsider.status == 404  # another workspace's log is not there for her
    assert (await actions(mallory)) == []

    pages, before = [], None
    while True:
        query = {"limit": 2, **({"before": before} if before else {})}
        page = await audit(alice, **query)
        pages.append([e["id"] for e in page["entries"]])
        before = page["next_before"]
        if before is None:
            break
    ids = [i for page in pages for i in page]
    assert [len(p) for p in pages] == [2, 2, 2]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 6
    mine = await actions(alice, actor_id=bob.user_id)
    assert [(a, actor) for a, _, actor in mine] == [("file.uploaded", bob.user_id)]
    future = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    assert (await audit(alice, since=future))["entries"] == []
    bad = await alice.get(path, params={"action": "file.stolen"})
    assert bad.status == 422


async def test_one_step_uploads_the_policy_refuses_are_recorded(
    client: TestClient, people: People
) -> None:
    alice = await people.create("alice", role="admin")
    changed = await alice.request(
        "PATCH",
        f"/api/workspaces/{alice.workspace_id}/settings",
        json={"max_file_size": 100, "storage_quota": 150},
    )
    assert changed.status == 200, await changed.text()
    too_big = await alice.post("/api/upload", params={"filename": "big.txt"}, data=b"x" * 101)
    assert too_big.status == 413
    first = await alice.post("/api/upload", params={"filename": "a.txt"}, data=b"x" * 100)
    assert first.status == 201
    over = await alice.post("/api/upload", params={"filename": "b.txt"}, data=b"x" * 60)
    assert over.status == 507
    refused = (await audit(alice, action="upload.refused"))["entries"]
    assert sorted(
        (e["details"]["reason"], e["details"]["filename"], e["actor_id"]) for e in refused
    ) == [
        ("file_too_large", "big.txt", alice.user_id),
        ("quota_exceeded", None, alice.user_id),
    ]
    assert [a for a, _, _ in await actions(alice, action="file.uploaded")] == ["file.uploaded"]
