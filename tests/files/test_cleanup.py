"""The cleanup sweeper on both storage backends, at fixed instants (no sleeping).

Uploads go through the real endpoint; links are made by SQL (the one thing set up by
hand); orphans, stale multipart uploads and temp files are made the way crashes make
them. Each sweep is checked against what an operator would see: rows, the deletion
queue, objects as listed, multipart uploads as the S3 server itself lists them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from aiohttp.test_utils import TestClient
from PIL import Image
from support.chat import make_channel, post
from support.faultproxy import FaultProxy
from support.people import PASSWORD, People, Person
from support.processes import echora_env, run_echora
from support.seaweed import S3Server, direct_s3_client

import echora_server.files.sweeper
from echora_server.app import create_app
from echora_server.config import Config
from echora_server.db import deletions
from echora_server.db.pool import POOL
from echora_server.files import cleanup as sweeper
from echora_server.files.cleanup import SweepResult, sweep_once
from echora_server.storage.base import Storage, new_key
from echora_server.storage.factory import STORAGE
from echora_server.storage.s3.storage import S3Storage

HOUR = dt.timedelta(hours=1)
SECOND = dt.timedelta(seconds=1)


BACKENDS = ("local", "s3")


@pytest.fixture
def config_overrides() -> dict[str, Any]:
    """No background sweeps: the tests sweep by hand, at instants of their choosing."""
    return {"sweep_interval": 0}


def png_bytes() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (30, 120, 200)).save(out, "PNG")
    return out.getvalue()


async def chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


@dataclass(frozen=True)
class Uploaded:
    id: str
    keys: tuple[str, ...]  # the object, and its thumbnail when there is one


async def upload(person: Person, name: str, data: bytes) -> Uploaded:
    response = await person.post(
        f"/api/upload?filename={name}&workspace_id={person.workspace_id}", data=data
    )
    body = await response.json()
    assert response.status == 201, body
    attachment_id = body["attachments"][0]["id"]
    async with person.client.app[POOL].acquire() as conn:
        row = await conn.fetchrow(
            "SELECT storage_key, thumbnail_key FROM attachments WHERE id = $1", attachment_id
        )
    keys = tuple(k for k in (row["storage_key"], row["thumbnail_key"]) if k)
    return Uploaded(attachment_id, keys)


async def sql(client: TestClient, query: str, *args: Any) -> Any:
    async with client.app[POOL].acquire() as conn:
        return await conn.fetch(query, *args)


async def link(client: TestClient, attachment: Uploaded, message_id: int) -> None:
    await sql(
        client,
        "UPDATE attachments SET message_id = $1, linked_at = now() WHERE id = $2",
        message_id,
        attachment.id,
    )


async def age(client: TestClient, attachment: Uploaded, created_at: dt.datetime) -> None:
    await sql(
        client, "UPDATE attachments SET created_at = $1 WHERE id = $2", created_at, attachment.id
    )


@dataclass(frozen=True)
class State:
    rows: frozenset[str]
    queued: frozenset[str]
    objects: frozenset[str]  # our storage, every key
    elsewhere: frozenset[str]  # S3: every key in the bucket under the test's prefixes
    uploads: frozenset[str]  # S3: multipart uploads, as the server lists them
    temp_files: frozenset[str]  # local: the temp directory


async def state(client: TestClient, config: Config, server: S3Server | None) -> State:
    rows = await sql(client, "SELECT id FROM attachments")
    queued = await sql(client, "SELECT key FROM storage_deletions")
    storage: Storage = client.app[STORAGE]
    objects = frozenset([info.key async for info in storage.list()])
    elsewhere: frozenset[str] = frozenset()
    uploads: frozenset[str] = frozenset()
    temp_files: frozenset[str] = frozenset()
    if server is None:
        temp_files = frozenset(os.listdir(config.files_dir / sweeper.LOCAL_TEMP_DIR))
    else:  # ask the S3 server itself, not our code
        async with direct_s3_client(server) as s3:
            listed = await s3.list_objects_v2(Bucket=server.bucket, Prefix=config.s3_prefix)
            pending = await s3.list_multipart_uploads(Bucket=server.bucket, Prefix=config.s3_prefix)
        elsewhere = frozenset(o["Key"] for o in listed.get("Contents", []))
        uploads = frozenset(u["Key"] for u in pending.get("Uploads", []))
    return State(
        rows=frozenset(r["id"] for r in rows),
        queued=frozenset(r["key"] for r in queued),
        objects=objects,
        elsewhere=elsewhere,
        uploads=uploads,
        temp_files=temp_files,
    )


def server_of(request: pytest.FixtureRequest, config: Config) -> S3Server | None:
    if config.effective_storage != "s3":
        return None
    server: S3Server = request.getfixturevalue("s3_server")
    return server


async def stale_multipart(server: S3Server, s3_key: str) -> None:
    """A multipart upload a crashed process left: created, one part sent, never ended."""
    async with direct_s3_client(server) as s3:
        created = await s3.create_multipart_upload(Bucket=server.bucket, Key=s3_key)
        await s3.upload_part(
            Bucket=server.bucket,
            Key=s3_key,
            UploadId=created["UploadId"],
            PartNumber=1,
            Body=b"x" * 1024,
        )


async def test_sweeps_remove_exactly_what_they_should(
    request: pytest.FixtureRequest, client: TestClient, config: Config, people: People
) -> None:
    server = server_of(request, config)
    storage: Storage = client.app[STORAGE]
    pool = client.app[POOL]
    t0 = dt.datetime.now(dt.UTC)
    alice = await people.create("alice")
    ws = alice.workspace_id
    channel = await make_channel(alice, "general")
    kept_message = await post(alice, channel["id"], "keeps its file")
    doomed_message = await post(alice, channel["id"], "deleted with its file")

    ancient_linked = await upload(alice, "ancient.png", png_bytes())
    await link(client, ancient_linked, kept_message["id"])
    await age(client, ancient_linked, t0 - 365 * 24 * HOUR)
    deleted_with_message = await upload(alice, "gone.png", png_bytes())
    await link(client, deleted_with_message, doomed_message["id"])
    # By SQL, as any path that knows nothing of files would (a channel deleted, say):
    # the cascade and the trigger queue the objects, nobody deletes them at once.
    await sql(client, "DELETE FROM messages WHERE id = $1", doomed_message["id"])
    expired_image = await upload(alice, "expired.png", png_bytes())
    expired_text = await upload(alice, "expired.txt", b"never linked")
    for attachment in (expired_image, expired_text):
        await age(client, attachment, t0 - 48 * HOUR)
    young = await upload(alice, "young.txt", b"linked any minute now")
    assert len(ancient_linked.keys) == len(expired_image.keys) == 2  # thumbnails too

    orphan = new_key("files", ws)  # stored, then the process died before its row
    await storage.put_stream(orphan, chunks(b"orphan"), content_type="text/plain")
    other_kind = f"other/{ws}/not-ours-to-sweep"
    await storage.put_stream(other_kind, chunks(b"other"), content_type="text/plain")
    if server is None:
        dead_temp = config.files_dir / sweeper.LOCAL_TEMP_DIR / "crashed.part"
        dead_temp.write_bytes(b"half a file")
        stamp = (t0 - 24 * HOUR).timestamp()
        os.utime(dead_temp, (stamp, stamp))
    else:
        prefix = config.s3_prefix
        await stale_multipart(server, f"{prefix}/files/{ws}/2026/01/stale-upload")
        await stale_multipart(server, f"{prefix}/other/{ws}/not-ours-either")
        await stale_multipart(server, f"{prefix}-elsewhere/files/{ws}/2026/01/not-ours")
        async with direct_s3_client(server) as s3:
            await s3.put_object(
                Bucket=server.bucket, Key=f"{prefix}-elsewhere/files/{ws}/x", Body=b"x"
            )

    before = await state(client, config, server)
    assert before.queued == set(deleted_with_message.keys)
    now = t0 + 2 * HOUR  # past the longest upload, short of the orphan grace
    expected = SweepResult(
        expired_unlinked_attachments=2,
        deleted_queued_objects=5,  # the message's file and thumbnail, the expired three
        aborted_multipart_uploads=1 if server else 0,
        temp_files=0 if server else 1,
    )
    assert await sweep_once(pool, storage, config, now, dry_run=True) == expected
    assert await state(client, config, server) == before
    assert await sweep_once(pool, storage, config, now) == expected
    after = await state(client, config, server)
    assert after.rows == {ancient_linked.id, young.id}
    assert after.queued == set()
    kept = {*ancient_linked.keys, *young.keys, orphan, other_kind}
    assert after.objects == kept
    assert after.temp_files == set()
    if server is not None:
        prefix = config.s3_prefix
        assert after.uploads == {
            f"{prefix}/other/{ws}/not-ours-either",
            f"{prefix}-elsewhere/files/{ws}/2026/01/not-ours",
        }
        assert after.elsewhere == {f"{prefix}/{k}" for k in kept} | {
            f"{prefix}-elsewhere/files/{ws}/x"
        }
    assert await sweep_once(pool, storage, config, now) == SweepResult()  # a rerun: no-op

    now = t0 + 7 * HOUR  # past the orphan grace: every object is old, only one has no row
    assert await sweep_once(pool, storage, config, now, dry_run=True) == SweepResult(
        orphan_objects=1
    )
    assert await sweep_once(pool, storage, config, now) == SweepResult(orphan_objects=1)
    assert (await state(client, config, server)).objects == kept - {orphan}

    now = t0 + 25 * HOUR  # the young upload was never linked either
    assert await sweep_once(pool, storage, config, now) == SweepResult(
        expired_unlinked_attachments=1, deleted_queued_objects=1
    )
    final = await state(client, config, server)
    assert final.rows == {ancient_linked.id}
    assert final.objects == {*ancient_linked.keys, other_kind}
    now = t0 + 10 * 365 * 24 * HOUR  # linked files are never swept, however old
    (recorded,) = await sql(client, "SELECT count(*) FROM audit_log")
    assert recorded["count"] > 0  # while audit records past their retention are
    assert await sweep_once(pool, storage, config, now) == SweepResult(
        pruned_audit_entries=recorded["count"]
    )
    assert await state(client, config, server) == final
    assert await sql(client, "SELECT id FROM audit_log") == []


async def test_thresholds_are_exact(
    request: pytest.FixtureRequest, client: TestClient, config: Config, people: People
) -> None:
    server = server_of(request, config)
    storage: Storage = client.app[STORAGE]
    pool = client.app[POOL]
    alice = await people.create("alice")

    async def counted(kind: str, now: dt.datetime) -> int:
        result = await sweep_once(pool, storage, config, now, dry_run=True)
        assert result.errors == 0
        count: int = getattr(result, kind)
        return count

    created = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
    unlinked = await upload(alice, "a.txt", b"a")
    await age(client, unlinked, created)
    ttl = dt.timedelta(seconds=config.unlinked_ttl)
    assert await counted("expired_unlinked_attachments", created + ttl) == 0
    assert await counted("expired_unlinked_attachments", created + ttl + SECOND) == 1

    orphan = new_key("files", alice.workspace_id)
    await storage.put_stream(orphan, chunks(b"o"), content_type="text/plain")
    info = await storage.stat(orphan)
    assert info is not None
    grace = dt.timedelta(seconds=config.orphan_grace)
    assert await counted("orphan_objects", info.last_modified + grace - SECOND) == 0
    assert await counted("orphan_objects", info.last_modified + grace + SECOND) == 1

    horizon = dt.timedelta(seconds=config.upload_horizon_seconds)
    assert horizon < grace
    if server is None:
        temp = config.files_dir / sweeper.LOCAL_TEMP_DIR / "x.part"
        temp.write_bytes(b"t")
        written = dt.datetime.fromtimestamp(temp.stat().st_mtime, dt.UTC)
        assert await counted("temp_files", written + horizon - SECOND) == 0
        assert await counted("temp_files", written + horizon + SECOND) == 1
        now = written + horizon + SECOND
        assert (await sweep_once(pool, storage, config, now)).temp_files == 1
        assert not temp.exists()
    else:
        await stale_multipart(server, f"{config.s3_prefix}/files/1/2026/01/partial")
        (pending,) = [u async for u in storage.list_pending_uploads()]
        assert await counted("aborted_multipart_uploads", pending.initiated + horizon) == 0
        now = pending.initiated + horizon + SECOND
        assert await counted("aborted_multipart_uploads", now) == 1
        assert (await sweep_once(pool, storage, config, now)).aborted_multipart_uploads == 1
        assert [u async for u in storage.list_pending_uploads()] == []


async def test_storage_outage_leaves_the_queue_for_a_later_sweep(
    database_url: str,
    tmp_path: Path,
    s3_server: S3Server,
    s3_config_values: dict[str, Any],
    aiohttp_client: Any,
) -> None:
    config = Config(
        database_url=database_url,
        data_dir=tmp_path,
        sweep_interval=0,
        **s3_config_values,
    )
    client = await aiohttp_client(create_app(config))
    pool, storage = client.app[POOL], client.app[STORAGE]
    alice = await People(client).create("alice")
    deleted = [await upload(alice, "a.png", png_bytes()), await upload(alice, "b.txt", b"b")]
    await sql(client, "DELETE FROM attachments WHERE id = ANY($1::text[])", [a.id for a in deleted])
    expired = await upload(alice, "c.txt", b"c")
    t0 = dt.datetime.now(dt.UTC)
    await age(client, expired, t0 - 48 * HOUR)
    keys = {k for a in (*deleted, expired) for k in a.keys}
    assert len(keys) == 4

    endpoint = urlparse(s3_server.endpoint_url)
    assert endpoint.hostname is not None and endpoint.port is not None
    async with FaultProxy((endpoint.hostname, endpoint.port)) as proxy:
        cut = S3Storage(
            config.model_copy(
                update={
                    "s3_endpoint_url": proxy.url,
                    "storage_timeout": 2,
                    "storage_idle_timeout": 2,
                }
            ),
            max_attempts=1,
        )
        await cut.start()
        try:
            proxy.block()
            now = t0 + HOUR
            result = await sweep_once(pool, cut, config, now)
            # The database work is done; every delete, and both listings, failed.
            assert result == SweepResult(expired_unlinked_attachments=1, errors=4 + 2)
            rows = await sql(client, "SELECT key, attempts, not_before FROM storage_deletions")
            assert {r["key"] for r in rows} == keys
            assert {(r["attempts"], r["not_before"]) for r in rows} == {
                (1, now + deletions.RETRY_FIRST)
            }
            assert all([await storage.stat(key) for key in keys])  # still stored
            proxy.unblock()
            assert await sweep_once(pool, cut, config, now + 30 * SECOND) == SweepResult()
            later = now + deletions.RETRY_FIRST
            assert await sweep_once(pool, cut, config, later) == SweepResult(
                deleted_queued_objects=4
            )
        finally:
            await cut.close()
    assert await sql(client, "SELECT key FROM storage_deletions") == []
    assert [await storage.stat(key) for key in keys] == [None] * 4
    assert await sweep_once(pool, storage, config, later) == SweepResult()


@pytest.mark.parametrize("config", ["local"], indirect=True)
async def test_killed_after_its_claim_a_sweep_is_finished_by_the_next(
    client: TestClient, config: Config, people: People
) -> None:
    pool, storage = client.app[POOL], client.app[STORAGE]
    alice = await people.create("alice")
    files = [await upload(alice, f"{n}.txt", b"x") for n in "ab"]
    await sql(client, "DELETE FROM attachments")
    now = dt.datetime.now(dt.UTC) + HOUR
    async with pool.acquire() as conn:  # a sweeper claims, then dies before deleting
        assert len(await deletions.claim_deletions(conn, now, 10)) == 2
    assert await sweep_once(pool, storage, config, now) == SweepResult()  # leased
    later = now + deletions.CLAIM_LEASE
    assert await sweep_once(pool, storage, config, later) == SweepResult(deleted_queued_objects=2)
    assert [await storage.stat(f.keys[0]) for f in files] == [None, None]


@pytest.mark.parametrize("config", ["local"], indirect=True)
async def test_concurrent_sweeps_share_the_work(
    client: TestClient, config: Config, people: People
) -> None:
    pool, storage = client.app[POOL], client.app[STORAGE]
    alice = await people.create("alice")
    t0 = dt.datetime.now(dt.UTC)
    for n in range(5):
        await age(client, await upload(alice, f"{n}.txt", b"x"), t0 - 48 * HOUR)
    for n in range(3):
        gone = await upload(alice, f"gone{n}.txt", b"x")
        await sql(client, "DELETE FROM attachments WHERE id = $1", gone.id)
    now = t0 + HOUR  # the queued deletions are due
    results = await asyncio.gather(*(sweep_once(pool, storage, config, now) for _ in range(3)))
    assert sum(r.expired_unlinked_attachments for r in results) == 5
    assert sum(r.deleted_queued_objects for r in results) == 8
    assert all(r.errors == 0 for r in results)
    assert [info async for info in storage.list()] == []


@pytest.mark.parametrize("config", ["local"], indirect=True)
@pytest.mark.parametrize("config_overrides", [{"audit_retention": 2 * 365 * 86400}])
async def test_a_link_in_progress_wins_over_expiry(
    client: TestClient, config: Config, people: People
) -> None:
    pool, storage = client.app[POOL], client.app[STORAGE]
    alice = await people.create("alice")
    channel = await make_channel(alice, "general")
    message = await post(alice, channel["id"], "with a file")
    attachment = await upload(alice, "late.txt", b"linked just in time")
    future = dt.datetime.now(dt.UTC) + 365 * 24 * HOUR
    async with pool.acquire() as conn, conn.transaction():  # the link holds the row
        linked = await conn.execute(
            "UPDATE attachments SET message_id = $1, linked_at = now() "
            "WHERE id = $2 AND message_id IS NULL",
            message["id"],
            attachment.id,
        )
        assert linked == "UPDATE 1"
        assert await sweep_once(pool, storage, config, future) == SweepResult()
    assert await sweep_once(pool, storage, config, future) == SweepResult()
    assert await storage.stat(attachment.keys[0]) is not None
    # And when the sweep locks it first, the link finds nothing to link.
    other = await upload(alice, "early.txt", b"swept first")
    assert (await sweep_once(pool, storage, config, future)).expired_unlinked_attachments == 1
    missed = await sql(
        client,
        "UPDATE attachments SET message_id = $1, linked_at = now() "
        "WHERE id = $2 AND message_id IS NULL RETURNING id",
        message["id"],
        other.id,
    )
    assert missed == []


@pytest.mark.parametrize("config", ["local"], indirect=True)
async def test_background_sweeps_survive_a_failure_and_export_metrics(
    config: Config,
    aiohttp_client: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = 0
    real = sweeper.sweep_once

    async def fails_once(*args: Any, **kwargs: Any) -> SweepResult:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("database gone for a moment")
        return await real(*args, **kwargs)

    monkeypatch.setattr(echora_server.files.sweeper, "sweep_once", fails_once)
    client = await aiohttp_client(create_app(config.model_copy(update={"sweep_interval": 0.05})))
    # Written straight to disk, not through an upload: a temp file renamed into place
    # while a sweep scans the temp directory is a race of its own (not this test's).
    key = new_key("files", 1)
    path = config.files_dir / key
    path.parent.mkdir(parents=True)
    path.write_bytes(b"x")
    await sql(client, "INSERT INTO storage_deletions (key) VALUES ($1)", key)

    removed = 'echora_sweep_removed_total{kind="deleted_queued_objects"} 1.0'
    # The queue row goes in the middle of a pass and the pass is counted at its end, so
    # the counter is the sign that the pass which removed the object is over.
    async with asyncio.timeout(10):
        while removed not in (metrics := await (await client.get("/metrics")).text()):
            await asyncio.sleep(0.02)
    assert await sql(client, "SELECT key FROM storage_deletions") == []
    assert calls >= 2
    assert not path.exists()
    assert 'echora_sweep_removed_total{kind="orphan_objects"} 0.0' in metrics
    assert "echora_sweep_errors_total 1.0" in metrics
    (last,) = [
        line
        for line in metrics.splitlines()
        if line.startswith("echora_sweep_last_success_timestamp_seconds ")
    ]
    assert float(last.split()[1]) > 0
    assert "echora_sweep_duration_seconds_count" in metrics


@pytest.mark.parametrize("config", ["local"], indirect=True)
async def test_interval_zero_runs_no_sweeper(client: TestClient, config: Config) -> None:
    assert config.sweep_interval == 0
    assert [t for t in asyncio.all_tasks() if t.get_name() == "sweeper"] == []


@pytest.mark.parametrize("config", ["local"], indirect=True)
async def test_cleanup_command(client: TestClient, config: Config, people: People) -> None:
    alice = await people.create("alice")
    expired = await upload(alice, "old.txt", b"old")
    await age(client, expired, dt.datetime.now(dt.UTC) - 48 * HOUR)
    await upload(alice, "new.txt", b"new")
    assert config.database_url is not None
    env = echora_env(
        ECHORA_DATABASE_URL=config.database_url.get_secret_value(),
        ECHORA_DATA_DIR=str(config.data_dir),
        ECHORA_LOG_FORMAT="json",
    )
    dry = await asyncio.to_thread(run_echora, "cleanup", "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert "nothing was changed" in dry.stdout
    assert "expired_unlinked_attachments: 1\n" in dry.stdout
    assert "deleted_queued_objects: 1\n" in dry.stdout
    assert "errors: 0\n" in dry.stdout
    assert len(await sql(client, "SELECT id FROM attachments")) == 2
    assert await client.app[STORAGE].stat(expired.keys[0]) is not None

    done = await asyncio.to_thread(run_echora, "cleanup", env=env)
    assert done.returncode == 0, done.stderr
    assert "expired_unlinked_attachments: 1\n" in done.stdout
    assert '"event": "sweep"' in done.stderr  # logged as well as printed
    assert len(await sql(client, "SELECT id FROM attachments")) == 1
    assert await client.app[STORAGE].stat(expired.keys[0]) is None


@pytest.mark.parametrize("config", ["local"], indirect=True)
async def test_expired_sessions_are_pruned(
    client: TestClient, config: Config, people: People, aiohttp_client: Any
) -> None:
    await people.create("alice")
    cookies = []
    for _ in range(2):
        response = await client.post(
            "/api/auth/login", json={"username": "alice", "password": PASSWORD}
        )
        assert response.status == 200
        cookies.append(response.cookies["echora_session"].value)
    now = dt.datetime.now(dt.UTC)
    # The first session ended an hour ago; the second lasts another day.
    await sql(client, "UPDATE sessions SET expires_at = $1", now + 24 * HOUR)
    await sql(
        client,
        "UPDATE sessions SET expires_at = $1 WHERE token_hash = sha256($2::text::bytea)",
        now - HOUR,
        cookies[0],
    )
    pool, storage = client.app[POOL], client.app[STORAGE]
    assert await sweep_once(pool, storage, config, now, dry_run=True) == SweepResult(
        expired_sessions=1
    )
    assert len(await sql(client, "SELECT 1 FROM sessions")) == 2
    assert await sweep_once(pool, storage, config, now) == SweepResult(expired_sessions=1)
    assert await sweep_once(pool, storage, config, now) == SweepResult()
    assert len(await sql(client, "SELECT 1 FROM sessions")) == 1
    for cookie, status in ((cookies[0], 401), (cookies[1], 200)):
        response = await client.get("/api/me", cookies={"echora_session": cookie})
        assert response.status == status, await response.text()
