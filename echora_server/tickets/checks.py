"""Finalize: the attachment is created by the statement that marks its ticket finalized.
Bytes a PUT brought through Echora were counted, hashed and typed on their way in; bytes
sent straight to the store are checked here: the size and first bytes by one ranged read
(its answer gives the whole size), then the digest: a presigned PUT's is the one the store
verified against the signed checksum (a HEAD), a form's is read from the bytes once. A
refused object is deleted at once."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, NoReturn

import asyncpg
import structlog

from echora_server.audit.record import UPLOAD_FINALIZED, UPLOAD_REFUSED, origin, record
from echora_server.core.errors import ApiError
from echora_server.db import attachments, tickets
from echora_server.db.attachments import NewAttachment
from echora_server.db.records import Attachment
from echora_server.db.tickets import Ticket
from echora_server.files.deletion import delete_queued, discard
from echora_server.files.images import THUMBNAIL_TYPE, decodable, read_dimensions
from echora_server.files.mediatypes import MediaType, classify, served_type
from echora_server.files.meter import HEAD_BYTES
from echora_server.files.policy import UploadPolicy
from echora_server.files.uploads import FILES_KIND, THUMBNAIL_SUFFIX, UploadService
from echora_server.storage.base import InvalidRange, ObjectNotFound, Storage, new_key
from echora_server.tickets.refusals import (
    NotReceived,
    StoredDigestMismatch,
    StoredSizeMismatch,
    UploadExpired,
    finalized_already,
    not_found,
)

log = structlog.get_logger("echora.tickets")


class ObjectCheck:
    """One finalize's state: ``settled`` once the ticket is finalized or refused."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        storage: Storage,
        uploads: UploadService,
        ticket: Ticket,
        policy: UploadPolicy,
        *,
        expired: bool = False,
    ) -> None:
        self.pool = pool
        self.storage = storage
        self.uploads = uploads
        self.ticket = ticket
        self.policy = policy  # the workspace's, read when the finalize took the ticket
        self.settled = False
        self.thumbnail_key: str | None = None
        self.key = ticket.storage_key  # of the bytes checked, and the attachment's
        # Sending had to start before now: no bytes means none can come any more.
        self.expired = expired

    def not_received(self) -> ApiError:
        return UploadExpired() if self.expired else NotReceived()


async def check_object(check: ObjectCheck, clock: Callable[[], dt.datetime]) -> Attachment:
    ticket = check.ticket
    try:
        media, size, sha256 = await _checked(check)
        new = await _attachment(check, media, size, sha256)
        here = origin()
        async with check.pool.acquire() as conn:
            inserted = await attachments.insert_attachments(
                conn,
                ticket.workspace_id,
                ticket.owner_id,
                ticket.channel_id,
                [new],
                clock(),
                (UPLOAD_FINALIZED, here.request_id, here.client_addr),
                tickets=True,
            )
        rows = inserted.rows
        if not rows:
            async with check.pool.acquire() as conn:
                again = await tickets.select_ticket_by_id(conn, ticket.id)
            if again is not None and again.finalized_at is not None:
                if check.key == ticket.storage_key:
                    # Another finalize won (this one outlived its hold): its row names the
                    # same thumbnail key, so that object stays.
                    check.thumbnail_key = None
                raise finalized_already()
            # The owner left the channel or workspace since, or the channel was deleted.
            raise not_found()
        check.settled = True
    except BaseException:
        unclaimed = [k for k in (check.thumbnail_key,) if k is not None]
        if check.key != ticket.storage_key:
            unclaimed.append(check.key)  # the sealed copy
        if unclaimed:
            await discard(check.pool, check.storage, unclaimed)
        raise
    if check.key != ticket.storage_key:  # the form's object: nothing claims it now
        await discard(check.pool, check.storage, [ticket.storage_key])
    return rows[0]


async def _checked(check: ObjectCheck) -> tuple[MediaType, tuple[int, int] | None, bytes]:
    """The bytes' type, image size and SHA-256, once they passed every check."""
    ticket = check.ticket
    if ticket.received_at is not None:
        # A PUT through Echora counted, hashed and typed these bytes, in a key nobody else
        # can write: nothing to read again.
        media = MediaType(ticket.declared_type, ticket.detected_type)
        try:  # checked at the PUT too; the policy may have changed since
            check.policy.check_type(media.detected, ticket.filename)
        except ApiError as refusal:
            await _refuse(check, refusal)
        if ticket.sha256 is None:
            raise RuntimeError("a received ticket has its digest (sql/0007)")
        size = (ticket.width, ticket.height) if ticket.width and ticket.height else None
        return media, size, ticket.sha256
    # A form's policy lets whoever holds it post again until it expires, finalize or not:
    # the bytes checked and kept are at a key no presigned request names. (A presigned PUT
    # needs none: it takes only the bytes of its signed digest.)
    small_form = ticket.method == "post" and 0 < ticket.size <= HEAD_BYTES
    if ticket.method == "post" and not small_form:
        await _seal_by_copy(check)
    head, head_digest = await _read_head(check)
    try:
        media = classify(ticket.declared_type, ticket.filename, head)
        check.policy.check_type(media.detected, ticket.filename)
    except ApiError as refusal:
        await _refuse(check, refusal)
    size = read_dimensions(head, media.detected) if media.detected else None
    sha256 = head_digest or await _store_digest(check)
    if ticket.declared_sha256 not in (None, sha256):
        await _refuse(check, StoredDigestMismatch(details={"stored_sha256": sha256.hex()}))
    if small_form:  # all of it was just read and checked: those very bytes are kept
        key = new_key(FILES_KIND, ticket.workspace_id)
        await check.storage.put_stream(key, _single(head), content_type=served_type(media.detected))
        check.key = key
    return media, size, sha256


async def _seal_by_copy(check: ObjectCheck) -> None:
    """The store's own copy of a form's object, made before any check reads it."""
    key = new_key(FILES_KIND, check.ticket.workspace_id)
    try:
        await check.storage.copy(check.ticket.storage_key, key)
    except ObjectNotFound:
        raise check.not_received() from None
    check.key = key


async def _read_head(check: ObjectCheck) -> tuple[bytes, bytes | None]:
    """The object's first bytes by one ranged GET, whose answer also tells its whole size
    (no HEAD); and its SHA-256 when those bytes are all of it."""
    ticket = check.ticket
    if ticket.size == 0:
        info = await check.storage.stat(check.key)
        if info is None:
            raise check.not_received()
        if info.size != 0:
            await _refuse(check, _size_mismatch(ticket, info.size))
        return b"", hashlib.sha256().digest()
    chunks: list[bytes] = []
    end = min(ticket.size, HEAD_BYTES) - 1
    try:
        reader = await check.storage.open(check.key, 0, end)
    except (ObjectNotFound, InvalidRange):
        raise check.not_received() from None  # InvalidRange: no bytes where bytes were due
    async with reader:
        if reader.size != ticket.size:
            await _refuse(check, _size_mismatch(ticket, reader.size))
        async for chunk in reader.chunks():
            chunks.append(chunk)
    head = b"".join(chunks)
    return head, hashlib.sha256(head).digest() if len(head) == ticket.size else None


def _size_mismatch(ticket: Ticket, stored: int) -> StoredSizeMismatch:
    return StoredSizeMismatch(details={"declared_bytes": ticket.size, "stored_bytes": stored})


async def _store_digest(check: ObjectCheck) -> bytes:
    """The SHA-256 of bytes that did not come through Echora: for a presigned PUT, the one
    the store verified (it refused any bytes but the declared digest's), else read."""
    ticket = check.ticket
    if ticket.method == "store_put":
        verified = await check.storage.stored_sha256(ticket.storage_key)
        if verified is not None:
            return verified
    return await _digest(check.storage, check.key, ticket.size)


async def _digest(storage: Storage, key: str, size: int) -> bytes:
    """For bytes that did not come through Echora: read them once, never more than declared."""
    sha256, seen = hashlib.sha256(), 0
    async with await storage.open(key) as reader:
        async for chunk in reader.chunks():
            seen += len(chunk)
            if seen > size:
                break
            sha256.update(chunk)
    return sha256.digest()


async def _attachment(
    check: ObjectCheck, media: MediaType, size: tuple[int, int] | None, sha256: bytes
) -> NewAttachment:
    ticket = check.ticket
    if media.detected is not None and decodable(media.detected):
        thumbnail = await check.uploads.thumbnailer.make(
            check.storage, check.key, ticket.size, media.detected
        )
        if thumbnail is not None:
            key = f"{check.key}{THUMBNAIL_SUFFIX}"
            await check.storage.put_stream(
                key, _single(thumbnail.data), content_type=THUMBNAIL_TYPE
            )
            check.thumbnail_key = key
            size = size or (thumbnail.source_width, thumbnail.source_height)
    return NewAttachment(
        id=ticket.id,
        storage_key=check.key,
        filename=ticket.filename,
        size=ticket.size,
        declared_type=media.declared,
        detected_type=media.detected,
        sha256=sha256,
        width=size[0] if size else None,
        height=size[1] if size else None,
        thumbnail_key=check.thumbnail_key,
    )


async def _single(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def record_step(
    conn: asyncpg.Connection, action: str, ticket: Ticket, **details: Any
) -> None:
    """A ticket's step in the audit log: its owner acted, on the ticket's id."""
    await record(
        conn,
        action,
        workspace_id=ticket.workspace_id,
        actor_id=ticket.owner_id,
        attachment_id=ticket.id,
        **details,
    )


async def record_refusal(conn: asyncpg.Connection, ticket: Ticket, reason: str) -> None:
    await record_step(
        conn, UPLOAD_REFUSED, ticket, reason=reason, filename=ticket.filename, size=ticket.size
    )


async def _refuse(check: ObjectCheck, refusal: ApiError) -> NoReturn:
    """Delete the ticket (its trigger queues the object), then the object, then say why."""
    ticket = check.ticket
    async with check.pool.acquire() as conn, conn.transaction():
        deleted = await tickets.delete_ticket(conn, ticket.id)
        if deleted:
            await record_refusal(conn, ticket, refusal.code)
    check.settled = True
    if deleted:
        await delete_queued(check.pool, check.storage, [check.ticket.storage_key])
    log.info("upload_refused", ticket=check.ticket.id, code=refusal.code)
    raise refusal


async def discard_refused(pool: asyncpg.Pool, storage: Storage, keys: Sequence[str]) -> None:
    """Bytes of a PUT that failed while its ticket lives: deleted now if the store lets us;
    else they wait, claimed by the ticket, which queues them when it is swept."""
    for key in keys:
        try:
            await storage.delete(key)
        except Exception:
            log.warning("ticket_object_delete_failed", key=key, exc_info=True)
