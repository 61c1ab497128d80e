"""The HTTP side of an upload: multipart/form-data (target fields first, so the target is
authorised before any file byte is stored) or one raw body named by ``?filename=``. Every read
has an idle timeout (aiohttp has none), and a broken body or lost client becomes an ApiError,
never a bare OSError (which the error middleware would take for a database outage)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from aiohttp import BodyPartReader, MultipartReader, hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from pydantic import Field

from echora_server.core.errors import ApiError, InvalidRequest
from echora_server.core.validation import MAX_ID, Query
from echora_server.storage.base import StorageError

T = TypeVar("T")

# A read returns what aiohttp has buffered, whole chunks when they fit: a large size saves
# copies. The size cap is checked after every read.
READ_SIZE = 1024 * 1024
TARGET_FIELDS = ("channel_id", "workspace_id")
FILE_FIELD = "file"
_FIELD_MAX_BYTES = 32
_IDENTITY_ENCODINGS = frozenset({"", "identity", "binary", "7bit", "8bit"})
# A reset connection, a short body, a malformed body: the client's problem.
_CLIENT_FAILURES = (OSError, HttpProcessingError, ValueError, RuntimeError)


class UploadTimeout(ApiError):
    status = 408
    code = "upload_timeout"
    message = "The upload stalled; no data arrived for too long."


class UploadIncomplete(ApiError):
    status = 400
    code = "upload_incomplete"
    message = "The upload was interrupted or its body is malformed."


class UnsupportedEncoding(ApiError):
    status = 415
    code = "unsupported_encoding"
    message = "Send uploads without Content-Encoding or Content-Transfer-Encoding."


class BodyTooLarge(ApiError):
    status = 413
    code = "payload_too_large"
    message = "The request body is larger than any upload may be."


# Room in a multipart body for its fields, boundaries and part headers, beyond the files.
MULTIPART_OVERHEAD = 1024 * 1024


def refuse_before_body(
    request: web.Request, *, max_bytes: int, max_files: int, store_down: bool
) -> None:
    """What the headers alone show an upload cannot succeed (for ``Expect: 100-continue``):
    a body encoding, a Content-Length over any possible body, the store known to be down."""
    _check_encoding(request.headers)
    length = request.content_length
    multipart = request.content_type.startswith("multipart/")
    limit = max_files * max_bytes + MULTIPART_OVERHEAD if multipart else max_bytes
    if length is not None and length > limit:
        raise BodyTooLarge(details={"limit_bytes": limit})
    if store_down:
        raise StorageError("the store failed moments ago")


class UploadQuery(Query):
    """The query string of an upload."""

    channel_id: int | None = Field(
        None, ge=1, le=MAX_ID, description="The channel the files are for"
    )
    workspace_id: int | None = Field(
        None, ge=1, le=MAX_ID, description="The workspace, when no channel is named"
    )
    # Short enough that any name, percent-encoded (12 bytes a character at worst), fits
    # aiohttp's 8190-byte request line; names are cut to 100 characters anyway.
    filename: str | None = Field(
        None, max_length=255, description="The file's name, for a raw-body upload"
    )


@dataclass(frozen=True, slots=True)
class TargetFields:
    channel_id: int | None
    workspace_id: int | None


@dataclass(frozen=True, slots=True)
class IncomingFile:
    filename: str | None  # unsanitised
    declared_type: str | None
    reader: ChunkReader


class ChunkReader:
    def __init__(self, body: UploadBody, field: BodyPartReader | None) -> None:
        self._body = body
        self._field = field

    async def read(self) -> bytes:
        if self._field is not None:
            return await self._body.client(self._field.read_chunk(READ_SIZE))
        content = self._body.request.content
        if content.is_eof():
            # The whole body has arrived (a small file usually has): nothing to wait for, so
            # no idle timer to arm and cancel.
            try:
                return content.read_nowait(READ_SIZE)
            except _CLIENT_FAILURES:
                raise UploadIncomplete() from None
        return await self._body.client(content.read(READ_SIZE))


def _parse_id(name: str, raw: str) -> int:
    raw = raw.strip()
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_ID:
        raise InvalidRequest(details=[{"field": name, "problem": "must be a positive integer"}])
    return int(raw)


def _check_encoding(headers: Mapping[str, str]) -> None:
    for header in (hdrs.CONTENT_ENCODING, "Content-Transfer-Encoding"):
        if headers.get(header, "").strip().lower() not in _IDENTITY_ENCODINGS:
            raise UnsupportedEncoding()


class UploadBody:
    """``target()`` first, then ``files()``. ``text_fields`` (name: max bytes) takes text fields
    instead of target ones, for ``text()``: the one-shot send, whose channel is in its path."""

    def __init__(
        self,
        request: web.Request,
        query: UploadQuery,
        idle_timeout: float,
        text_fields: Mapping[str, int] | None = None,
    ) -> None:
        self.request = request
        self._filename = query.filename
        self._idle_timeout = idle_timeout
        self._text_limits = dict(text_fields or {})
        self._texts: dict[str, str] = {}
        self._multipart: MultipartReader | None = None
        self._first_file: BodyPartReader | None = None
        self._fields = {
            name: value
            for name, value in (
                ("channel_id", query.channel_id),
                ("workspace_id", query.workspace_id),
            )
            if value is not None
        }

    @classmethod
    async def open(
        cls,
        request: web.Request,
        query: UploadQuery,
        idle_timeout: float,
        text_fields: Mapping[str, int] | None = None,
    ) -> UploadBody:
        """Refuse encodings we would store undecoded (and decompression bombs)."""
        _check_encoding(request.headers)
        body = cls(request, query, idle_timeout, text_fields)
        if request.content_type == "multipart/form-data":
            try:
                body._multipart = await request.multipart()
            except ValueError:
                raise UploadIncomplete("The multipart body has no valid boundary.") from None
        elif request.content_type.startswith("multipart/"):
            raise ApiError(
                "Send files as multipart/form-data, or as a raw body.",
                code="unsupported_media_type",
            ).with_status(415)
        return body

    @classmethod
    def raw(cls, request: web.Request, idle_timeout: float) -> ChunkReader:
        """The whole body as one file's bytes, whatever its Content-Type says."""
        _check_encoding(request.headers)
        return ChunkReader(
            cls(
                request,
                UploadQuery(channel_id=None, workspace_id=None, filename=None),
                idle_timeout,
            ),
            None,
        )

    async def client(self, read: Awaitable[T]) -> T:
        timeout = asyncio.timeout(self._idle_timeout)
        try:
            async with timeout:
                return await read
        except TimeoutError:
            if timeout.expired():
                raise UploadTimeout(details={"idle_timeout_seconds": self._idle_timeout}) from None
            raise UploadIncomplete() from None
        except _CLIENT_FAILURES:
            raise UploadIncomplete() from None

    async def target(self) -> TargetFields:
        if self._multipart is not None:
            await self._read_fields(self._multipart)
        return TargetFields(self._fields.get("channel_id"), self._fields.get("workspace_id"))

    async def _read_fields(self, multipart: MultipartReader) -> None:
        while (field := await self._next_field(multipart)) is not None:
            if field.name == FILE_FIELD:
                self._first_file = field
                return
            if field.name in self._text_limits:
                await self._read_text(field.name, field)
                continue
            if self._text_limits or field.name not in TARGET_FIELDS:
                raise InvalidRequest(
                    details=[{"field": str(field.name), "problem": "unknown field"}]
                )
            raw = await self._read_value(field.name, field, _FIELD_MAX_BYTES)
            value = _parse_id(field.name, raw.decode("ascii", "replace"))
            if self._fields.setdefault(field.name, value) != value:
                raise InvalidRequest(
                    details=[{"field": field.name, "problem": "differs from the query string"}]
                )

    async def _read_value(self, name: str, field: BodyPartReader, limit: int) -> bytes:
        raw = bytearray()
        while chunk := await self.client(field.read_chunk(READ_SIZE)):
            raw += chunk
            if len(raw) > limit:
                raise InvalidRequest(details=[{"field": name, "problem": "too long"}])
        return bytes(raw)

    async def _read_text(self, name: str, field: BodyPartReader) -> None:
        if name in self._texts:
            raise InvalidRequest(details=[{"field": name, "problem": "given twice"}])
        raw = await self._read_value(name, field, self._text_limits[name])
        try:
            self._texts[name] = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidRequest(details=[{"field": name, "problem": "must be UTF-8"}]) from None

    def text(self, name: str) -> str | None:
        return self._texts.get(name)

    async def _next_field(self, multipart: MultipartReader) -> BodyPartReader | None:
        field = await self.client(multipart.next())
        if field is None:
            return None
        if not isinstance(field, BodyPartReader):
            raise InvalidRequest("Nested multipart bodies are not accepted.")
        _check_encoding(field.headers)
        return field

    async def files(self) -> AsyncGenerator[IncomingFile, None]:
        """Consume each file's reader to the end before asking for the next."""
        if self._multipart is None:
            yield IncomingFile(
                self._filename,
                self.request.headers.get(hdrs.CONTENT_TYPE),
                ChunkReader(self, None),
            )
            return
        field = self._first_file
        while field is not None:
            if field.name != FILE_FIELD:
                raise InvalidRequest(
                    details=[{"field": str(field.name), "problem": "fields must come before files"}]
                )
            yield IncomingFile(
                field.filename, field.headers.get(hdrs.CONTENT_TYPE), ChunkReader(self, field)
            )
            field = await self._next_field(self._multipart)
