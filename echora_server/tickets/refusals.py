"""Why a ticket's request is refused: the errors of the ticket routes, and, when a hold on
a ticket found nothing to hold, what state the ticket is in instead."""

from __future__ import annotations

import datetime as dt

from echora_server.core.errors import ApiError, Conflict, NotFound
from echora_server.db.tickets import Ticket


class NotReceived(ApiError):
    status = 409
    code = "upload_not_received"
    message = "No bytes were stored for this upload ticket yet."


class UploadExpired(ApiError):
    status = 410
    code = "upload_expired"
    message = "The upload ticket has expired; ask for a new one."


class SizeMismatch(ApiError):
    status = 400
    code = "size_mismatch"
    message = "The bytes sent are not the size the ticket declared."


class DigestMismatch(ApiError):
    status = 400
    code = "digest_mismatch"
    message = "The bytes sent do not have the SHA-256 the ticket declared."


class StoredSizeMismatch(ApiError):
    status = 422
    code = "upload_size_mismatch"
    message = "The stored object is not the size the ticket declared; it was deleted."


class StoredDigestMismatch(ApiError):
    status = 422
    code = "upload_digest_mismatch"
    message = "The stored object does not have the SHA-256 the ticket declared; it was deleted."


def not_found() -> NotFound:
    """The same answer for no such ticket, a wrong token and someone else's ticket."""
    return NotFound("No such upload ticket, or not yours.", code="upload_not_found")


def finalized_already() -> Conflict:
    return Conflict("The upload is finalized already.", code="upload_finalized")


def why_not_sending(ticket: Ticket | None, now: dt.datetime) -> ApiError:
    """Why a PUT found no ticket to hold (``ticket``: the one its id and token name)."""
    if ticket is None:
        return not_found()
    if ticket.finalized_at is not None:
        return finalized_already()
    if ticket.received_at is not None:
        return Conflict("The bytes were sent already.", code="upload_already_sent")
    if ticket.expires_at <= now:
        return UploadExpired()
    if ticket.method != "put":
        return Conflict("Send this ticket's bytes to the store's URL.", code="upload_goes_to_store")
    return Conflict("Another request is sending the bytes.", code="upload_in_progress")


def why_not_finalizing(ticket: Ticket | None, now: dt.datetime) -> ApiError:
    """Why a finalize found no ticket to hold (``ticket``: the caller's, or None)."""
    if ticket is None:
        return not_found()
    if ticket.finalized_at is not None:
        return finalized_already()
    if ticket.finalize_before <= now:
        return UploadExpired()
    return Conflict("The bytes are still being sent or checked.", code="upload_in_progress")
