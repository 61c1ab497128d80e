"""One cleanup pass. Phases fail independently (storage down must not stop database work):
unlinked attachments past their TTL (a trigger queues their objects); the deletion queue, in
leased batches; stale S3 multipart uploads (MinIO ignores lifecycle rules); unnamed objects past
``orphan_grace`` (longer than any upload, which stores objects before rows); old local
temp files; expired sessions. Every step is idempotent: passes may die anywhere and may overlap."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import structlog

from echora_server.config import Config
from echora_server.db import audit, credentials, deletions, sweeps, tickets
from echora_server.files.deletion import delete_objects, discard
from echora_server.files.uploads import FILES_KIND
from echora_server.storage.base import PendingUpload, Storage
from echora_server.storage.local.storage import LocalStorage

log = structlog.get_logger("echora.sweeper")

# What uploads write; other prefixes in the bucket are not ours to judge.
SWEPT_PREFIXES = (f"{FILES_KIND}/",)
BATCH = 100  # rows locked or keys claimed per statement
ORPHAN_CHECK_BATCH = 500  # listed keys looked up per query
# LocalStorage's temp directory, only read, for a dry run's count.
LOCAL_TEMP_DIR = ".tmp"


@dataclass(frozen=True, slots=True)
class SweepResult:
    deleted_queued_objects: int = 0
    expired_unlinked_attachments: int = 0
    aborted_multipart_uploads: int = 0
    orphan_objects: int = 0
    temp_files: int = 0
    expired_sessions: int = 0
    expired_upload_tickets: int = 0
    pruned_audit_entries: int = 0
    errors: int = 0

    def counts(self) -> dict[str, int]:
        return dataclasses.asdict(self)


REMOVED_KINDS = tuple(f.name for f in dataclasses.fields(SweepResult) if f.name != "errors")


@dataclass(frozen=True, slots=True)
class Cutoffs:
    unlinked_created_before: dt.datetime
    upload_started_before: dt.datetime  # multipart uploads and temp files
    orphan_written_before: dt.datetime
    audit_before: dt.datetime

    @classmethod
    def at(cls, config: Config, now: dt.datetime) -> Cutoffs:
        return cls(
            unlinked_created_before=now - dt.timedelta(seconds=config.unlinked_ttl),
            upload_started_before=now - dt.timedelta(seconds=config.upload_horizon_seconds),
            orphan_written_before=now - dt.timedelta(seconds=config.orphan_grace),
            audit_before=now - dt.timedelta(seconds=config.audit_retention),
        )


async def sweep_once(
    pool: asyncpg.Pool,
    storage: Storage,
    config: Config,
    now: dt.datetime,
    *,
    dry_run: bool = False,
) -> SweepResult:
    """``now`` must be timezone-aware. ``dry_run``: count, change nothing."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    started = time.perf_counter()
    sweep = _Sweep(pool, storage, Cutoffs.at(config, now), now, dry_run)
    await sweep.run()
    result = SweepResult(**sweep.counts)
    busy = any(result.counts().values())
    (log.info if busy else log.debug)(
        "sweep",
        dry_run=dry_run,
        duration_ms=round((time.perf_counter() - started) * 1000, 1),
        **result.counts(),
    )
    return result


class _Sweep:
    def __init__(
        self,
        pool: asyncpg.Pool,
        storage: Storage,
        cutoffs: Cutoffs,
        now: dt.datetime,
        dry_run: bool,
    ) -> None:
        self.pool = pool
        self.storage = storage
        self.cutoffs = cutoffs
        self.now = now
        self.dry_run = dry_run
        self.counts = {f.name: 0 for f in dataclasses.fields(SweepResult)}
        self._expiring_keys = 0  # dry run: objects expire_unlinked would have queued

    async def run(self) -> None:
        phases: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            ("expire_unlinked", self.expire_unlinked),
            ("expire_tickets", self.expire_tickets),
            ("drain_deletions", self.drain_deletions),
            ("abort_stale_uploads", self.abort_stale_uploads),
            ("remove_orphans", self.remove_orphans),
            ("sweep_temp", self.sweep_temp),
            ("prune_sessions", self.prune_sessions),
            ("prune_audit", self.prune_audit),
        ]
        for name, phase in phases:
            try:
                await phase()
            except Exception:
                # Storage or the database is down: the next sweep retries.
                log.warning("sweep_phase_failed", phase=name, exc_info=True)
                self.counts["errors"] += 1

    async def expire_unlinked(self) -> None:
        cutoff = self.cutoffs.unlinked_created_before
        if self.dry_run:
            async with self.pool.acquire() as conn:
                estimate = await sweeps.count_expired_unlinked(conn, cutoff)
            self.counts["expired_unlinked_attachments"] += estimate.attachments
            self._expiring_keys = estimate.new_keys
            return
        while True:
            async with self.pool.acquire() as conn:
                deleted = await sweeps.delete_expired_unlinked(conn, cutoff, self.now, BATCH)
            self.counts["expired_unlinked_attachments"] += deleted
            if deleted < BATCH:
                return

    async def expire_tickets(self) -> None:
        """Tickets past their finalize window; the unfinalized queue their objects, due now."""
        if self.dry_run:
            async with self.pool.acquire() as conn:
                self.counts["expired_upload_tickets"] += await tickets.count_dead_tickets(
                    conn, self.now
                )
            return
        while True:
            async with self.pool.acquire() as conn:
                swept = await tickets.delete_dead_tickets(conn, self.now, BATCH)
            self.counts["expired_upload_tickets"] += swept.unfinalized
            if swept.finalized + swept.unfinalized < BATCH:
                return

    async def drain_deletions(self) -> None:
        if self.dry_run:
            async with self.pool.acquire() as conn:
                due = await deletions.count_due_deletions(conn, self.now)
            self.counts["deleted_queued_objects"] += due + self._expiring_keys
            return
        while True:
            async with self.pool.acquire() as conn:
                claimed = await deletions.claim_deletions(conn, self.now, BATCH)
            if not claimed:
                return
            keys = list(claimed)
            failed = await self._abort_leftovers(claimed)
            failed |= await delete_objects(self.storage, [k for k in keys if k not in failed])
            done = [key for key in keys if key not in failed]
            async with self.pool.acquire() as conn:
                if done:
                    await deletions.dequeue_deletions(conn, done)
                if failed:
                    await deletions.postpone_deletions(conn, sorted(failed), self.now)
            self.counts["deleted_queued_objects"] += len(done)
            self.counts["errors"] += len(failed)
            if not done or len(keys) < BATCH:
                return  # storage refuses everything (down): the rest waits for the next sweep

    async def _abort_leftovers(self, claimed: dict[str, str | None]) -> set[str]:
        """Abort the pending uploads failed writes left; the keys whose abort failed."""
        failed = set()
        for key, upload_id in claimed.items():
            if upload_id is None:
                continue
            try:
                await self.storage.abort_pending_upload(PendingUpload(key, upload_id, self.now))
            except Exception:
                log.warning("leftover_abort_failed", key=key, exc_info=True)
                failed.add(key)
            else:
                self.counts["aborted_multipart_uploads"] += 1
        return failed

    async def abort_stale_uploads(self) -> None:
        cutoff = self.cutoffs.upload_started_before
        async for upload in self.storage.list_pending_uploads():
            if not upload.key.startswith(SWEPT_PREFIXES) or upload.initiated >= cutoff:
                continue
            if not self.dry_run:
                try:
                    await self.storage.abort_pending_upload(upload)
                except Exception:
                    log.warning("sweep_abort_failed", key=upload.key, exc_info=True)
                    self.counts["errors"] += 1
                    continue
            self.counts["aborted_multipart_uploads"] += 1

    async def remove_orphans(self) -> None:
        cutoff = self.cutoffs.orphan_written_before
        for prefix in SWEPT_PREFIXES:
            old: list[str] = []
            async for info in self.storage.list(prefix):
                if info.last_modified < cutoff:
                    old.append(info.key)
                if len(old) >= ORPHAN_CHECK_BATCH:
                    await self._remove_if_unclaimed(old)
                    old = []
            if old:
                await self._remove_if_unclaimed(old)

    async def _remove_if_unclaimed(self, keys: Sequence[str]) -> None:
        async with self.pool.acquire() as conn:
            orphans = await sweeps.select_unclaimed_keys(conn, keys)
        if self.dry_run or not orphans:
            self.counts["orphan_objects"] += len(orphans)
            return
        failed = await discard(self.pool, self.storage, orphans)  # the queue retries these
        self.counts["orphan_objects"] += len(orphans) - len(failed)
        self.counts["errors"] += len(failed)

    async def sweep_temp(self) -> None:
        if not isinstance(self.storage, LocalStorage):
            return  # S3 writes leave multipart uploads instead
        cutoff = self.cutoffs.upload_started_before
        if self.dry_run:
            temp_dir = self.storage.root / LOCAL_TEMP_DIR
            count = await asyncio.to_thread(_count_older_files, temp_dir, cutoff.timestamp())
        else:
            count = await self.storage.sweep_temp(cutoff)
        self.counts["temp_files"] += count

    async def prune_sessions(self) -> None:
        async with self.pool.acquire() as conn:
            if self.dry_run:
                count = await credentials.count_expired_sessions(conn, self.now)
            else:
                count = await credentials.delete_expired_sessions(conn, self.now)
        self.counts["expired_sessions"] += count

    async def prune_audit(self) -> None:
        """Audit records past the retention, by the time they were last counted."""
        before = self.cutoffs.audit_before
        if self.dry_run:
            async with self.pool.acquire() as conn:
                self.counts["pruned_audit_entries"] += await audit.count_older(conn, before)
            return
        while True:
            async with self.pool.acquire() as conn:
                deleted = await audit.delete_older(conn, before, BATCH)
            self.counts["pruned_audit_entries"] += deleted
            if deleted < BATCH:
                return


def _count_older_files(directory: Path, older_than: float) -> int:
    count = 0
    with contextlib.suppress(FileNotFoundError), os.scandir(directory) as entries:
        for entry in entries:
            try:
                if entry.is_file(follow_symlinks=False):
                    count += entry.stat(follow_symlinks=False).st_mtime < older_than
            except FileNotFoundError:
                continue  # renamed into place or discarded since the scan: not stale
    return count
