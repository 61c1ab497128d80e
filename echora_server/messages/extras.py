"""What a message carries besides its text: uploaded files (attachments) and links.

Linking keeps the security invariant "link once, same scope": an attachment goes from
unlinked to one message at most once, only by its uploader, only within its workspace (and
its channel, when the upload named one), in the transaction that inserts the message. A
message is never committed with fewer attachments than requested: a shortfall raises,
which rolls the message back. Attachments someone else uploaded, of another workspace, or
that do not exist all answer the same 422 ``attachment_unavailable``; only the caller's
own already-linked uploads answer 409 ``attachment_already_linked``.

Deleting a message deletes its attachment rows first (the trigger of sql/0003 queues the
objects in ``storage_deletions``) and, right after the commit, the objects themselves;
what storage refuses stays queued for the sweeper.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Annotated
from urllib.parse import urlsplit

import asyncpg
import structlog
from aiohttp import web
from pydantic import Field

from echora_server.core.errors import ApiError, InvalidRequest
from echora_server.core.validation import Body, check_text
from echora_server.db import attachments
from echora_server.db.records import Link, Message
from echora_server.keys import POOL, STORAGE, UPLOADER
from echora_server.storage.base import Storage

log = structlog.get_logger("echora.message_parts")

MAX_ATTACHMENTS = 10
MAX_LINKS = 10
MAX_URL = 2000
MAX_LINK_TITLE = 200
# Ids are 22 characters; anything up to this length is looked up (and simply not found).
MAX_ATTACHMENT_ID = 64

AttachmentId = Annotated[str, Field(min_length=1, max_length=MAX_ATTACHMENT_ID)]


class LinkIn(Body):
    """A link as clients send it (REST body and WebSocket frame alike)."""

    url: str = Field(max_length=MAX_URL, description="An http or https URL")
    title: str = Field("", max_length=MAX_LINK_TITLE)


class AttachmentUnavailable(ApiError):
    status = 422
    code = "attachment_unavailable"
    message = "An attachment cannot be added to this message."


class AttachmentAlreadyLinked(ApiError):
    status = 409
    code = "attachment_already_linked"
    message = "An attachment is already part of a message."


@dataclass(frozen=True, slots=True)
class Parts:
    """Checked attachment ids (distinct, in the sender's order) and links."""

    attachment_ids: tuple[str, ...] = ()
    links: tuple[Link, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.attachment_ids or self.links)


def check_parts(attachment_ids: Sequence[str], links: Sequence[LinkIn]) -> Parts:
    """Validate what clients send; shared by REST and WebSocket so both apply one rule."""

    def problem(field: str, text: str) -> InvalidRequest:
        return InvalidRequest(details=[{"field": field, "problem": text}])

    if len(attachment_ids) > MAX_ATTACHMENTS:
        raise problem("attachment_ids", f"at most {MAX_ATTACHMENTS}")
    if len(set(attachment_ids)) != len(attachment_ids):
        raise problem("attachment_ids", "must not repeat an id")
    if len(links) > MAX_LINKS:
        raise problem("links", f"at most {MAX_LINKS}")
    return Parts(tuple(attachment_ids), tuple(_check_link(i, link) for i, link in enumerate(links)))


def _check_link(index: int, link: LinkIn) -> Link:
    field = f"links.{index}.url"
    url = check_text(link.url, field, max_length=MAX_URL, min_length=1)
    title = check_text(link.title, f"links.{index}.title", max_length=MAX_LINK_TITLE)
    refused = InvalidRequest(details=[{"field": field, "problem": "must be an http(s) URL"}])
    if any(ch.isspace() for ch in url):
        raise refused
    try:
        parts = urlsplit(url)
        host = parts.hostname
        # "https://bank.example@evil.example" shows one host and opens another.
        credentials = parts.username is not None or parts.password is not None
    except ValueError:  # a malformed IPv6 host or port
        raise refused from None
    if parts.scheme.lower() not in ("http", "https") or not host or credentials:
        raise refused
    return Link(url, title)


async def link_attachments(conn: asyncpg.Connection, message: Message, ids: Sequence[str]) -> None:
    """Link every one of ``ids`` to the just-inserted ``message``, or raise (the caller's
    transaction then rolls the message back)."""
    if not ids:
        return
    author, workspace_id = message.author.id, message.workspace_id
    try:
        linked = await attachments.link_attachments(
            conn, ids, author, workspace_id, message.channel_id, message.id
        )
    except asyncpg.DeadlockDetectedError:
        # Two sends racing for overlapping attachments in different orders: one loses.
        raise AttachmentAlreadyLinked() from None
    if len(linked) == len(ids):
        return
    missed = [i for i in ids if i not in set(linked)]
    own = await attachments.select_own_linked_ids(conn, missed, author, workspace_id)
    if len(own) == len(missed):
        raise AttachmentAlreadyLinked(details={"attachment_ids": own})
    raise AttachmentUnavailable()


async def with_attachments(conn: asyncpg.Connection, messages: Sequence[Message]) -> list[Message]:
    """The messages with their attachments, loaded in one query for the whole page."""
    found = await attachments.select_attachments_of_messages(conn, [m.id for m in messages])
    return [replace(m, attachments=tuple(found.get(m.id, ()))) for m in messages]


async def delete_objects(app: web.Application, keys: list[str]) -> None:
    """Delete the objects of rows deleted by a committed transaction, and dequeue them.

    Best effort and owned by the upload service, so a handler cancelled mid-way does not
    cut it short: an object storage refuses now stays queued for the sweeper."""
    if keys:
        await app[UPLOADER].run_owned(_delete_queued(app[POOL], app[STORAGE], keys))


async def _delete_queued(pool: asyncpg.Pool, storage: Storage, keys: list[str]) -> None:
    results = await asyncio.gather(*(storage.delete(key) for key in keys), return_exceptions=True)
    done = [key for key, result in zip(keys, results, strict=True) if result is None]
    if len(done) < len(keys):
        log.warning("object_delete_failed", queued_for_sweeper=len(keys) - len(done))
    if not done:
        return
    try:
        async with pool.acquire() as conn:
            await attachments.delete_storage_deletions(conn, done)
    except Exception:  # the sweeper deletes them again: deleting is idempotent
        log.warning("dequeue_failed", exc_info=True)
