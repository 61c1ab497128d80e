"""A workspace's upload policy as the upload paths apply it: the largest file (the server's
cap or the workspace's, whichever is smaller), the types it accepts by sniffed type, and
the refusals the quotas give. The type groups are defined here and nowhere else."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from echora_server.core.errors import ApiError
from echora_server.db.policies import QuotaRefusal, WorkspaceSettings
from echora_server.files.mediatypes import OCTET_STREAM, type_from_name

# Ready groups an admin may name in allowed_types and denied_types.
TYPE_GROUPS: dict[str, frozenset[str]] = {
    "images": frozenset(
        {
            *("image/png", "image/apng", "image/jpeg", "image/gif", "image/webp"),
            *("image/bmp", "image/tiff", "image/x-icon", "image/heic", "image/avif"),
            "image/svg+xml",
        }
    ),
    "audio": frozenset(
        {
            *("audio/mpeg", "audio/ogg", "audio/x-wav", "audio/x-flac", "audio/flac"),
            *("audio/aac", "audio/mp4", "audio/x-aiff", "audio/amr", "audio/midi", "audio/opus"),
        }
    ),
    "video": frozenset(
        {
            *("video/mp4", "video/webm", "video/quicktime", "video/x-matroska"),
            *("video/x-msvideo", "video/mpeg", "video/x-flv", "video/x-m4v", "video/3gpp"),
        }
    ),
    "documents": frozenset(
        {
            *("application/pdf", "text/plain", "text/csv", "text/markdown", "application/rtf"),
            "application/msword",
            "application/vnd.ms-excel",
            "application/vnd.ms-powerpoint",
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            "application/vnd.openxmlformats-officedocument.presentationml.presentation",
            "application/vnd.oasis.opendocument.text",
            "application/vnd.oasis.opendocument.spreadsheet",
            "application/vnd.oasis.opendocument.presentation",
            "application/epub+zip",
        }
    ),
    "archives": frozenset(
        {
            *("application/zip", "application/x-tar", "application/gzip", "application/x-bzip2"),
            *("application/x-xz", "application/x-7z-compressed", "application/x-rar-compressed"),
            *("application/vnd.rar", "application/zstd", "application/x-lzip"),
        }
    ),
}


def expand(entries: Iterable[str]) -> frozenset[str]:
    """Media types and group names -> media types."""
    found: set[str] = set()
    for entry in entries:
        found |= TYPE_GROUPS.get(entry, {entry})
    return frozenset(found)


def policy_type(detected: str | None, filename: str) -> str:
    """The type the lists judge: the sniffed one; bytes that tell nothing fall back to the
    extension, else ``application/octet-stream``."""
    return detected or type_from_name(filename) or OCTET_STREAM


class TypeNotAllowed(ApiError):
    status = 415
    code = "type_not_allowed"
    message = "This workspace does not accept files of this type."


class QuotaExceeded(ApiError):
    status = 507
    code = "quota_exceeded"
    message = "The storage quota has no room for this file."


class TicketsDisabled(ApiError):
    status = 403
    code = "tickets_disabled"
    message = "Upload tickets are off in this workspace; use POST /api/upload."


def quota_exceeded(refusal: QuotaRefusal) -> QuotaExceeded:
    return QuotaExceeded(
        details={
            "quota": refusal.quota,
            "bytes_used": refusal.bytes_used,
            "bytes_allowed": refusal.bytes_allowed,
        }
    )


@dataclass(frozen=True, slots=True)
class UploadPolicy:
    max_bytes: int
    allowed: frozenset[str] | None  # None: every type not denied
    denied: frozenset[str]
    tickets: bool
    direct_uploads: bool
    own_max_bytes: int | None = None  # the workspace's own limit, if it set one

    @classmethod
    def of(cls, settings: WorkspaceSettings, server_max_bytes: int) -> UploadPolicy:
        own = settings.max_file_size
        return cls(
            own_max_bytes=own,
            max_bytes=server_max_bytes if own is None else min(own, server_max_bytes),
            allowed=expand(settings.allowed_types) if settings.allowed_types is not None else None,
            denied=expand(settings.denied_types),
            tickets=settings.tickets,
            direct_uploads=settings.direct_uploads,
        )

    def bounded(self, cap: int) -> int:
        """A route's own per-file cap (files sent to a bot), under the workspace's limit."""
        return cap if self.own_max_bytes is None else min(cap, self.own_max_bytes)

    def admits(self, media_type: str) -> bool:
        if media_type in self.denied:
            return False
        return self.allowed is None or media_type in self.allowed

    def check_type(self, detected: str | None, filename: str) -> None:
        judged = policy_type(detected, filename)
        if not self.admits(judged):
            raise TypeNotAllowed(details={"type": judged, "filename": filename})
