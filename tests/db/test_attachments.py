"""The attachment queries against a real PostgreSQL: who may read what, and the rule that
deleting rows queues their objects."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections.abc import AsyncIterator

import asyncpg
import pytest

from echora_server.accounts import service as accounts
from echora_server.db import workspaces
from echora_server.db.attachments import (
    NewAttachment,
    insert_attachments,
    select_attachment_for_reader,
)
from echora_server.db.records import Attachment, User


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database_url)
    try:
        yield connection
    finally:
        await connection.close()


UPLOADED = ("file.uploaded", None, None)  # the audit record: action, request, client


async def insert(
    conn: asyncpg.Connection,
    workspace_id: int,
    uploader_id: int,
    channel_id: int | None,
    files: list[NewAttachment],
) -> list[Attachment]:
    inserted = await insert_attachments(
        conn, workspace_id, uploader_id, channel_id, files, dt.datetime.now(dt.UTC), UPLOADED
    )
    assert inserted.refusal is None  # no quota in these tests
    return inserted.rows


def new_file(name: str = "a.txt", thumbnail: bool = False) -> NewAttachment:
    key = f"files/1/2026/11/{secrets.token_urlsafe(24)}"
    return NewAttachment(
        id=secrets.token_urlsafe(16),
        storage_key=key,
        filename=name,
        size=3,
        declared_type="text/plain",
        detected_type="text/plain",
        sha256=hashlib.sha256(b"abc").digest(),
        width=None,
        height=None,
        thumbnail_key=f"{key}-thumb" if thumbnail else None,
    )


async def user(conn: asyncpg.Connection, name: str, workspace: str = "acme") -> tuple[User, int]:
    created, ws = await accounts.create_user(
        conn, workspace_slug=workspace, username=name, password="correct horse battery"
    )
    return created, ws.id


async def channel(conn: asyncpg.Connection, ws: int, private: bool, *members: User) -> int:
    channel_id: int = await conn.fetchval(
        "INSERT INTO channels (workspace_id, name, private) VALUES ($1, $2, $3) RETURNING id",
        ws,
        secrets.token_hex(4),
        private,
    )
    for member in members:
        await conn.execute(
            "INSERT INTO channel_members (channel_id, user_id, workspace_id) VALUES ($1, $2, $3)",
            channel_id,
            member.id,
            ws,
        )
    return channel_id


async def link(conn: asyncpg.Connection, attachment_id: str, channel_id: int, author: User) -> int:
    """Set up a linked attachment at the SQL level: this file tests the read rule alone
    (linking itself is tested through the API in test_linking.py)."""
    message_id: int = await conn.fetchval(
        "INSERT INTO messages (channel_id, workspace_id, author_id, content) "
        "SELECT id, workspace_id, $2, '' FROM channels WHERE id = $1 RETURNING id",
        channel_id,
        author.id,
    )
    await conn.execute(
        "UPDATE attachments SET message_id = $2, linked_at = now() WHERE id = $1",
        attachment_id,
        message_id,
    )
    return message_id


async def test_insert_keeps_order_and_needs_current_membership(conn: asyncpg.Connection) -> None:
    alice, ws = await user(conn, "alice")
    bob, _ = await user(conn, "bob")
    files = [new_file(f"{i}.txt") for i in range(5)]
    rows = await insert(conn, ws, alice.id, None, files)
    assert [r.id for r in rows] == [f.id for f in files]
    assert rows[0].sha256 == hashlib.sha256(b"abc").digest() and rows[0].message_id is None

    private = await channel(conn, ws, True, alice)
    assert await insert(conn, ws, bob.id, private, [new_file()]) == []  # not in it
    await workspaces.delete_membership(conn, ws, alice.id)
    assert await insert(conn, ws, alice.id, None, [new_file()]) == []
    assert await conn.fetchval("SELECT count(*) FROM attachments") == 5


async def test_who_may_read(conn: asyncpg.Connection) -> None:
    alice, ws = await user(conn, "alice")
    bob, _ = await user(conn, "bob")  # same workspace, in no channel
    mallory, _ = await user(conn, "mallory", workspace="globex")
    public = await channel(conn, ws, False, alice)
    private = await channel(conn, ws, True, alice)
    unlinked, in_public, in_private = await insert(
        conn, ws, alice.id, None, [new_file() for _ in range(3)]
    )

    async def readers(attachment_id: str) -> set[str]:
        found = set()
        for reader in (alice, bob, mallory):
            if await select_attachment_for_reader(conn, attachment_id, reader.id) is not None:
                found.add(reader.username)
        return found

    assert await readers(unlinked.id) == {"alice"}  # only its uploader, until linked
    await link(conn, in_public.id, public, alice)
    await link(conn, in_private.id, private, alice)
    assert await readers(in_public.id) == {"alice", "bob"}  # like the channel's messages
    assert await readers(in_private.id) == {"alice"}
    assert await readers("x" * 22) == set()

    await workspaces.delete_membership(conn, ws, alice.id)  # read rights end at once
    assert await readers(unlinked.id) == set()
    assert await readers(in_public.id) == {"bob"}


async def test_deleted_rows_queue_their_objects(conn: asyncpg.Connection) -> None:
    alice, ws = await user(conn, "alice")
    public = await channel(conn, ws, False, alice)
    photo, kept = await insert(
        conn, ws, alice.id, public, [new_file("p.png", thumbnail=True), new_file()]
    )
    message_id = await link(conn, photo.id, public, alice)
    await conn.execute("DELETE FROM messages WHERE id = $1", message_id)  # the cascade
    queued = {r["key"] for r in await conn.fetch("SELECT key FROM storage_deletions")}
    assert queued == {photo.storage_key, photo.thumbnail_key}
    assert await conn.fetchval("SELECT count(*) FROM attachments") == 1

    await conn.execute("DELETE FROM channels WHERE id = $1", public)  # scoped rows go too
    queued = {r["key"] for r in await conn.fetch("SELECT key FROM storage_deletions")}
    assert kept.storage_key in queued
