"""Uploads, all or nothing: each file streams into storage, then ONE statement inserts every
row (no transaction around it unless a message is written with them); until it commits, a
failure deletes what was stored. The commit and cleanups are owned tasks (a cancelled handler
cannot cut them short), and no connection is held while client bytes or storage are awaited."""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TypeVar

import asyncpg
import structlog
from aiohttp import web

from echora_server.audit.record import FILE_UPLOADED, UPLOAD_REFUSED, origin, record
from echora_server.auth.access import (
    CHANNEL_NOT_FOUND,
    WORKSPACE_NOT_FOUND,
    channel_or_404,
    membership_or_404,
    refuse_archived,
)
from echora_server.auth.identity import Identity
from echora_server.config import CONFIG
from echora_server.core.errors import ApiError, Forbidden, InvalidRequest, NotFound, unavailable
from echora_server.core.tasks import TASKS, OwnedTasks
from echora_server.db import attachments, policies
from echora_server.db.attachments import Inserted, NewAttachment
from echora_server.db.pool import POOL, end_backend
from echora_server.db.records import Attachment
from echora_server.files.deletion import discard, leftover_recorder
from echora_server.files.filenames import sanitize_filename
from echora_server.files.images import THUMBNAIL_TYPE, Thumbnailer, decodable, read_dimensions
from echora_server.files.mediatypes import classify, served_type
from echora_server.files.meter import FileMeter
from echora_server.files.policy import UploadPolicy, quota_exceeded
from echora_server.files.upload_body import IncomingFile, TargetFields
from echora_server.storage.base import ObjectTooLarge, Storage, StorageError, new_key
from echora_server.storage.factory import STORAGE

log = structlog.get_logger("echora.uploads")
T = TypeVar("T")
Clock = Callable[[], dt.datetime]
# Work done in the transaction that inserts a batch's rows, given those rows.
InTransaction = Callable[[asyncpg.Connection, list[Attachment]], Awaitable[T]]

FILES_KIND = "files"
THUMBNAIL_SUFFIX = "-thumb"


class FileTooLarge(ApiError):
    status = 413
    code = "file_too_large"
    message = "A file is larger than the upload limit."


class TooManyFiles(ApiError):
    status = 413
    code = "too_many_files"
    message = "Too many files in one upload."


@dataclass(frozen=True, slots=True)
class UploadLimits:
    max_bytes: int
    max_files: int
    idle_timeout: float
    # First file byte to commit. The sweeper relies on it: an object older than this
    # (plus slack) whose row is missing will never get one.
    max_seconds: float


@dataclass(frozen=True, slots=True)
class UploadTarget:
    workspace_id: int
    channel_id: int | None  # set: the files may only be linked into this channel
    policy: UploadPolicy  # the workspace's, read with the access check


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UploadService:
    def __init__(
        self,
        pool: asyncpg.Pool,
        storage: Storage,
        limits: UploadLimits,
        tasks: OwnedTasks,
        thumbnailer: Thumbnailer | None = None,
        clock: Clock = _utcnow,
    ) -> None:
        self.pool = pool
        self.storage = storage
        self.limits = limits
        self.tasks = tasks
        self.thumbnailer = thumbnailer or Thumbnailer()
        self.clock = clock  # open tickets reserve quota until their times, by this clock

    def policy(self, settings: policies.WorkspaceSettings) -> UploadPolicy:
        return UploadPolicy.of(settings, self.limits.max_bytes)

    def batch(
        self, target: UploadTarget, uploader_id: int, *, max_bytes: int | None = None
    ) -> UploadBatch:
        """``max_bytes``: the per-file cap, when not the upload limit (files sent to a bot)."""
        return UploadBatch(self, target, uploader_id, max_bytes)

    async def target(self, identity: Identity, fields: TargetFields) -> UploadTarget:
        """Where the files go, and its policy, by one query."""
        if fields.channel_id is not None:
            target = await self.channel_target(
                identity, fields.channel_id, "Join the channel to upload to it."
            )
            if fields.workspace_id not in (None, target.workspace_id):
                raise NotFound(CHANNEL_NOT_FOUND)
            return target
        async with self.pool.acquire() as conn:
            found = await policies.select_memberships_with_settings(
                conn, identity.user.id, fields.workspace_id
            )
        if fields.workspace_id is not None:
            membership, settings = found[0] if found else (None, policies.WorkspaceSettings())
            membership_or_404(identity, membership)
            return UploadTarget(fields.workspace_id, None, self.policy(settings))
        usable = [(m, s) for m, s in found if identity.may_use_workspace(m.workspace.id)]
        if len(usable) != 1:
            raise InvalidRequest(
                "Say where the files go: channel_id or workspace_id.", code="workspace_required"
            )
        membership, settings = usable[0]
        return UploadTarget(membership.workspace.id, None, self.policy(settings))

    async def channel_target(
        self, identity: Identity, channel_id: int, join_first: str
    ) -> UploadTarget:
        async with self.pool.acquire() as conn:
            found, settings = await policies.select_channel_target(
                conn, channel_id, identity.user.id
            )
        access = channel_or_404(identity, found)
        if not access.joined:
            raise Forbidden(join_first, code="not_channel_member")
        # Checked at the start only: an upload that races an archive stays unlinked (posting
        # to the channel is refused) and is swept like any unlinked upload.
        refuse_archived(access)
        return UploadTarget(access.channel.workspace_id, access.channel.id, self.policy(settings))


# What the policy refuses (size, type, quota), as opposed to what failed: audited.
REFUSALS = frozenset({413, 415, 507})


class UploadBatch:
    """``add`` each file, then ``commit``; leaving ``async with`` otherwise deletes them."""

    def __init__(
        self,
        service: UploadService,
        target: UploadTarget,
        uploader_id: int,
        max_bytes: int | None = None,
    ) -> None:
        self._service = service
        self._max_bytes = max_bytes
        self._target = target
        self._uploader_id = uploader_id
        self._files: list[NewAttachment] = []
        self._keys: list[str] = []  # every object stored so far, thumbnails included
        self._settled = False  # the commit task (or a discard) owns the objects now
        self._deadline = asyncio.get_running_loop().time() + service.limits.max_seconds

    async def __aenter__(self) -> UploadBatch:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None and not self._settled and self._keys:
            self._settled = True
            await self._service.tasks.run(self._discard())
        if isinstance(exc, ApiError) and exc.status in REFUSALS:
            await self._service.tasks.run(self._record_refusal(exc))

    async def _record_refusal(self, refusal: ApiError) -> None:
        details = refusal.details if isinstance(refusal.details, dict) else {}
        try:
            async with self._service.pool.acquire() as conn:
                await record(
                    conn,
                    UPLOAD_REFUSED,
                    workspace_id=self._target.workspace_id,
                    actor_id=self._uploader_id,
                    reason=refusal.code,
                    filename=details.get("filename"),
                    files_accepted_before=len(self._files),
                )
        except Exception:  # the refusal is the answer; its record is not worth a 500
            log.warning("audit_record_failed", action=UPLOAD_REFUSED, exc_info=True)

    async def _discard(self) -> None:
        await discard(self._service.pool, self._service.storage, self._keys)

    async def add(self, incoming: IncomingFile) -> None:
        limits, storage = self._service.limits, self._service.storage
        if len(self._files) >= limits.max_files:
            raise TooManyFiles(details={"limit_files": limits.max_files})
        filename = sanitize_filename(incoming.filename)
        policy = self._target.policy
        limit = policy.max_bytes if self._max_bytes is None else policy.bounded(self._max_bytes)
        meter = FileMeter(
            incoming.reader,
            max_bytes=limit,
            max_seconds=limits.max_seconds,
            deadline=self._deadline,
        )
        key = new_key(FILES_KIND, self._target.workspace_id)
        try:
            head = await meter.read_head()
            media = classify(incoming.declared_type, filename, head)
            policy.check_type(media.detected, filename)
            stored = await storage.put_stream(
                key,
                meter.chunks(),
                content_type=served_type(media.detected),
                sha256=lambda: meter.sha256,
            )
        except ObjectTooLarge:
            raise FileTooLarge(details={"limit_bytes": limit, "filename": filename}) from None
        self._keys.append(key)
        if stored.size != meter.size:
            raise StorageError(f"stored {stored.size} of {meter.size} bytes")
        size = read_dimensions(head, media.detected) if media.detected else None
        thumbnail_key = None
        if media.detected is not None and decodable(media.detected):
            thumbnail = await self._service.thumbnailer.make(
                storage, key, stored.size, media.detected
            )
            if thumbnail is not None:
                thumbnail_key = f"{key}{THUMBNAIL_SUFFIX}"
                await storage.put_stream(
                    thumbnail_key, _single(thumbnail.data), content_type=THUMBNAIL_TYPE
                )
                self._keys.append(thumbnail_key)
                size = size or (thumbnail.source_width, thumbnail.source_height)
        self._files.append(
            NewAttachment(
                id=secrets.token_urlsafe(16),
                storage_key=key,
                filename=filename,
                size=stored.size,
                declared_type=media.declared,
                detected_type=media.detected,
                sha256=meter.sha256,
                width=size[0] if size else None,
                height=size[1] if size else None,
                thumbnail_key=thumbnail_key,
            )
        )

    async def commit(self) -> list[Attachment]:
        if not self._files:
            raise InvalidRequest("Send at least one file.", code="no_files")
        self._settled = True
        return await self._service.tasks.run(self._insert_or_discard())

    async def _insert_or_discard(self) -> list[Attachment]:
        """The rows by one statement, committed on its own: one round trip, not three."""
        pool = self._service.pool
        backend: int | None = None  # the server process that ran the statement
        try:
            async with pool.acquire() as conn:
                backend = conn.get_server_pid()
                inserted = await self._insert(conn)
        except BaseException as exc:
            # An error the server answered with wrote nothing; a lost answer may have.
            refused = isinstance(exc, asyncpg.PostgresError) and unavailable(exc) is None
            if backend is not None and not refused:
                found = await self._rows_if_committed(backend)
                if found:
                    return found  # the rows stand, and so must their objects
                if found is None:
                    log.warning("upload_commit_unknown", left_for="orphan sweep")
                    raise
            await self._discard()
            raise
        if len(inserted.rows) != len(self._files):
            await self._discard()
            raise self._refusal(inserted)
        return inserted.rows

    async def _insert(self, conn: asyncpg.Connection) -> Inserted:
        target = self._target
        here = origin()
        return await attachments.insert_attachments(
            conn,
            target.workspace_id,
            self._uploader_id,
            target.channel_id,
            self._files,
            self._service.clock(),
            (FILE_UPLOADED, here.request_id, here.client_addr),
        )

    def _refusal(self, inserted: Inserted) -> ApiError:
        """Why no row was inserted: a quota had no room, or membership was lost meanwhile."""
        if inserted.refusal is not None:
            return quota_exceeded(inserted.refusal)
        return NotFound(CHANNEL_NOT_FOUND if self._target.channel_id else WORKSPACE_NOT_FOUND)

    async def commit_with(self, work: InTransaction[T]) -> T:
        """Insert the rows (maybe none) and run ``work`` in the same transaction. A COMMIT that
        failed yet happened re-raises: the rows stand, and ``work``'s result is the caller's."""
        self._settled = True
        return await self._service.tasks.run(self._commit_or_discard(work))

    async def _commit_or_discard(self, work: InTransaction[T]) -> T:
        pool = self._service.pool
        committing = False
        backend: int | None = None
        try:
            async with pool.acquire() as conn, conn.transaction():
                backend = conn.get_server_pid()
                inserted = await self._insert(conn)
                if len(inserted.rows) != len(self._files):
                    raise self._refusal(inserted)
                result = await work(conn, inserted.rows)
                committing = True
            return result
        except BaseException:
            if committing:  # the COMMIT itself failed: it may have happened anyway
                found = await self._rows_if_committed(backend)
                if found:
                    raise
                if found is None:  # unknowable now; deleting might leave dangling rows
                    log.warning("upload_commit_unknown", left_for="orphan sweep")
                    raise
            await self._discard()
            raise

    async def _rows_if_committed(self, backend: int | None = None) -> list[Attachment] | None:
        """The rows if they were committed; None if that cannot be known now. ``backend``: the
        server process whose answer was lost, ended first so it cannot commit after we look."""
        try:
            async with self._service.pool.acquire() as conn:
                if backend is not None and not await end_backend(conn, backend):
                    return None
                return await attachments.select_attachments_by_ids(
                    conn, [f.id for f in self._files]
                )
        except Exception:
            return None


async def _single(data: bytes) -> AsyncIterator[bytes]:
    yield data


UPLOADS = web.AppKey("uploads", UploadService)


async def uploads_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    limits = UploadLimits(
        max_bytes=config.max_upload_bytes,
        max_files=config.max_files_per_upload,
        idle_timeout=config.upload_idle_timeout,
        max_seconds=config.max_upload_time,
    )
    storage = app[STORAGE]
    storage.leftovers = leftover_recorder(app[POOL])
    app[UPLOADS] = UploadService(app[POOL], storage, limits, app[TASKS])
    yield
