"""Upload tickets: ask, send the bytes, finalize. A ticket is created under the owner's
open-ticket limit; a PUT holds it while it streams, counts, hashes and types the bytes into
the ticket's own key; a finalize holds it while it creates the attachment (``checks``).
Anything refused or never finalized is deleted with its object (a trigger queues it)."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import asyncpg
from aiohttp import web

from echora_server.audit.record import TICKET_CREATED, UPLOAD_RECEIVED
from echora_server.audit.tally import TALLY, Tally
from echora_server.auth.identity import Identity
from echora_server.auth.secrets import UPLOAD_TICKET_PREFIX, digest, new_secret, well_formed
from echora_server.config import CONFIG, Config
from echora_server.core.errors import (
    ApiError,
    InvalidRequest,
    TooManyRequests,
    Unauthorized,
)
from echora_server.db import tickets
from echora_server.db.pool import POOL
from echora_server.db.records import Attachment
from echora_server.db.tickets import NewTicket, Ticket
from echora_server.files.filenames import sanitize_filename
from echora_server.files.images import read_dimensions
from echora_server.files.mediatypes import (
    OCTET_STREAM,
    classify,
    expected_type,
    normalize_declared,
    served_type,
    type_from_name,
)
from echora_server.files.meter import FileMeter
from echora_server.files.policy import TicketsDisabled, TypeNotAllowed, quota_exceeded
from echora_server.files.upload_body import ChunkReader, TargetFields
from echora_server.files.uploads import FILES_KIND, UPLOADS, FileTooLarge, UploadService
from echora_server.storage.base import ObjectTooLarge, PresignedPost, PresignedPut, new_key
from echora_server.tickets.checks import (
    ObjectCheck,
    check_object,
    discard_refused,
    record_refusal,
    record_step,
)
from echora_server.tickets.refusals import (
    DigestMismatch,
    SizeMismatch,
    not_found,
    why_not_finalizing,
    why_not_sending,
)

Clock = Callable[[], dt.datetime]
# A finalize reads the object's head and maybe all of it: no holder waits longer.
FINALIZE_HOLD = dt.timedelta(minutes=10)


@dataclass(frozen=True, slots=True)
class TicketRequest:
    filename: str
    size: int
    content_type: str | None
    target: TargetFields
    sha256: bytes | None = None  # declared: the bytes must hash to it
    # A web page's origin (its Origin header): the store's CORS must let it send the bytes.
    # "": a page of an origin this server does not serve, which never gets the store's URL.
    page_origin: str | None = None


@dataclass(frozen=True, slots=True)
class Receipt:
    ticket_id: str
    size: int
    sha256: bytes


@dataclass(frozen=True, slots=True)
class IssuedTicket:
    ticket: Ticket
    token: str
    # How the bytes go straight to the store (a form, or a PUT); None: through Echora.
    direct: PresignedPost | PresignedPut | None


def _method(direct: PresignedPost | PresignedPut | None) -> tickets.Method:
    if isinstance(direct, PresignedPost):
        return "post"
    if isinstance(direct, PresignedPut):
        return "store_put"
    return "put"


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class TicketService:
    def __init__(
        self,
        pool: asyncpg.Pool,
        uploads: UploadService,
        config: Config,
        tally: Tally,
        clock: Clock = _utcnow,
    ) -> None:
        self.pool = pool
        self.tally = tally
        self.uploads = uploads
        self.storage = uploads.storage
        self.ttl = dt.timedelta(seconds=config.upload_ticket_ttl)
        self.horizon = dt.timedelta(seconds=config.upload_horizon_seconds)
        self.max_open = config.max_open_tickets
        self.clock = clock

    async def create(self, identity: Identity, asked: TicketRequest) -> IssuedTicket:
        limit = self.uploads.limits.max_bytes
        if asked.size > limit:
            raise FileTooLarge(details={"limit_bytes": limit})
        filename = sanitize_filename(asked.filename)
        declared = normalize_declared(asked.content_type)
        if asked.content_type is None:
            named = type_from_name(filename)
            if named is None:
                raise InvalidRequest(
                    "Say the file's content_type: its name does not tell it.",
                    code="content_type_required",
                )
            declared = named
        target = await self.uploads.target(identity, asked.target)
        policy = target.policy
        if not policy.tickets:
            raise TicketsDisabled()
        if asked.size > policy.max_bytes:
            raise FileTooLarge(details={"limit_bytes": policy.max_bytes})
        # A type the workspace refuses, as declared or named, before a byte is sent; a file
        # that says nothing of itself is judged by its bytes when they come.
        expected = expected_type(declared, filename)
        if expected != OCTET_STREAM and not policy.admits(expected):
            raise TypeNotAllowed(details={"type": expected, "filename": filename})
        token = new_secret(UPLOAD_TICKET_PREFIX)
        now = self.clock()
        key = new_key(FILES_KIND, target.workspace_id)
        direct = await self._direct(asked, key, declared) if policy.direct_uploads else None
        new = NewTicket(
            id=secrets.token_urlsafe(16),
            token_hash=digest(token),
            workspace_id=target.workspace_id,
            owner_id=identity.user.id,
            channel_id=target.channel_id,
            storage_key=key,
            filename=filename,
            declared_type=declared,
            size=asked.size,
            method=_method(direct),
            created_at=now,
            expires_at=now + self.ttl,
            finalize_before=now + self.ttl + self.horizon,
            declared_sha256=asked.sha256,
        )
        async with self.pool.acquire() as conn, conn.transaction():
            opened = await tickets.insert_ticket(conn, new, self.max_open)
            if opened.count >= self.max_open:
                raise self._too_many(opened.first_frees_at, now)
            if opened.refusal is not None:
                raise quota_exceeded(opened.refusal)
            ticket = await tickets.select_ticket(conn, new.id, new.token_hash)
            if ticket is not None:
                await record_step(
                    conn,
                    TICKET_CREATED,
                    ticket,
                    filename=ticket.filename,
                    size=ticket.size,
                    type=ticket.declared_type,
                    channel_id=ticket.channel_id,
                    method=ticket.method,
                )
        if ticket is None:  # deleted with its channel a moment after it was made
            raise not_found()
        return IssuedTicket(ticket, token, direct)

    async def _direct(
        self, asked: TicketRequest, key: str, content_type: str
    ) -> PresignedPost | PresignedPut | None:
        """Straight to the store when it takes it (None: through Echora). A client that
        declared the digest gets a PUT, which the store verifies and takes faster than a
        form; else a form. A web page gets either only if the store's CORS lets it send it.
        """
        expires_in = int(self.ttl.total_seconds())
        page = asked.page_origin
        if asked.sha256 is not None and (
            page is None or (page != "" and await self.storage.accepts_pages_from(page, "PUT"))
        ):
            put = await self.storage.presign_put(
                key, content_type=content_type, sha256=asked.sha256, expires_in=expires_in
            )
            if put is not None:
                return put
        if page is None or (page != "" and await self.storage.accepts_pages_from(page)):
            return await self.storage.presign_post(
                key, content_type=content_type, size=asked.size, expires_in=expires_in
            )
        return None

    def _token_hash(self, token: str | None) -> bytes:
        if token is None or not well_formed(token, UPLOAD_TICKET_PREFIX):
            self.tally.token_refused("invalid_upload_token", kind="upload_ticket")
            raise Unauthorized("Send the upload ticket's token.", code="invalid_upload_token")
        return digest(token)

    def _too_many(self, frees_at: dt.datetime | None, now: dt.datetime) -> TooManyRequests:
        wait = max(1, math.ceil((frees_at - now).total_seconds())) if frees_at else 1
        return TooManyRequests(
            "Too many open upload tickets: finalize or let some expire.",
            code="too_many_tickets",
            details={"limit_tickets": self.max_open},
            headers={"Retry-After": str(wait)},
        )

    async def receive(self, ticket_id: str, token: str | None, reader: ChunkReader) -> Receipt:
        """Stream a PUT's body into the ticket's key; all of it, exactly the declared size."""
        token_hash = self._token_hash(token)
        now = self.clock()
        until = now + dt.timedelta(seconds=self.uploads.limits.max_seconds) + self.horizon
        async with self.pool.acquire() as conn:
            held = await tickets.hold_for_sending(conn, ticket_id, token_hash, now, until)
            if held is None:
                raise await self._why_not_sending(conn, ticket_id, token_hash, now)
        ticket, settings = held
        policy = self.uploads.policy(settings)
        stored = False
        try:
            meter = FileMeter(
                reader,
                max_bytes=ticket.size,
                max_seconds=self.uploads.limits.max_seconds,
                deadline=asyncio.get_running_loop().time() + self.uploads.limits.max_seconds,
            )
            try:
                head = await meter.read_head()
                # The upload type rules, before a byte is stored (finalize trusts them).
                media = classify(ticket.declared_type, ticket.filename, head)
                policy.check_type(media.detected, ticket.filename)
                put = await self.storage.put_stream(
                    ticket.storage_key, meter.chunks(), content_type=served_type(media.detected)
                )
            except ObjectTooLarge:
                raise SizeMismatch(details={"declared_bytes": ticket.size}) from None
            stored = True
            if put.size != ticket.size:
                raise SizeMismatch(details={"declared_bytes": ticket.size, "sent_bytes": put.size})
            if ticket.declared_sha256 not in (None, meter.sha256):
                raise DigestMismatch(details={"sent_sha256": meter.sha256.hex()})
            size = read_dimensions(head, media.detected) if media.detected else None
            received = tickets.Received(
                meter.sha256, media.detected, *(size if size else (None, None))
            )
            async with self.pool.acquire() as conn, conn.transaction():
                if not await tickets.mark_received(conn, ticket.id, self.clock(), received):
                    raise not_found()  # gone meanwhile (its channel was deleted)
                await record_step(
                    conn,
                    UPLOAD_RECEIVED,
                    ticket,
                    size=put.size,
                    type=media.detected,
                )
        except BaseException as exc:
            await self.uploads.tasks.run(self._release_sending(ticket, stored, exc))
            raise
        return Receipt(ticket.id, put.size, meter.sha256)

    async def _release_sending(self, ticket: Ticket, stored: bool, exc: BaseException) -> None:
        if stored:  # no row claims these bytes: nothing else may see them
            await discard_refused(self.pool, self.storage, [ticket.storage_key])
        async with self.pool.acquire() as conn:
            await tickets.release_sending(conn, ticket.id)
            if isinstance(exc, ApiError) and exc.status < 500:  # refused, not failed
                await record_refusal(conn, ticket, exc.code)

    async def _why_not_sending(
        self, conn: asyncpg.Connection, ticket_id: str, token_hash: bytes, now: dt.datetime
    ) -> ApiError:
        ticket = await tickets.select_ticket(conn, ticket_id, token_hash)
        if ticket is None:
            self.tally.token_refused("upload_not_found", kind="upload_ticket")
        return why_not_sending(ticket, now)

    async def finalize(self, identity: Identity, ticket_id: str, token: str) -> Attachment:
        token_hash = self._token_hash(token)
        now = self.clock()
        async with self.pool.acquire() as conn:
            held = await tickets.hold_for_finalize(
                conn, ticket_id, token_hash, identity.user.id, now, now + FINALIZE_HOLD
            )
            if held is None:
                raise await self._why_not_finalizing(conn, identity, ticket_id, token_hash, now)
        ticket, settings = held
        check = ObjectCheck(
            self.pool,
            self.storage,
            self.uploads,
            ticket,
            self.uploads.policy(settings),
            expired=ticket.expires_at <= now,
        )
        try:
            return await self.uploads.tasks.run(check_object(check, self.clock))
        finally:
            if not check.settled:
                await self.uploads.tasks.run(self._release_finalize(ticket))

    async def _release_finalize(self, ticket: Ticket) -> None:
        async with self.pool.acquire() as conn:
            await tickets.release_finalize(conn, ticket.id)

    async def _why_not_finalizing(
        self,
        conn: asyncpg.Connection,
        identity: Identity,
        ticket_id: str,
        token_hash: bytes,
        now: dt.datetime,
    ) -> ApiError:
        ticket = await tickets.select_ticket(conn, ticket_id, token_hash)
        if ticket is None or ticket.owner_id != identity.user.id:
            self.tally.token_refused(
                "upload_not_found", None, identity.user.id, kind="upload_ticket"
            )
            ticket = None
        return why_not_finalizing(ticket, now)


TICKETS = web.AppKey("tickets", TicketService)


async def tickets_ctx(app: web.Application) -> AsyncIterator[None]:
    app[TICKETS] = TicketService(app[POOL], app[UPLOADS], app[CONFIG], app[TALLY])
    yield
