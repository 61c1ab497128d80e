"""One uploaded file's bytes on their way to storage: counted, hashed, and cut off at the
size limit (``ObjectTooLarge``: the backend leaves nothing behind) or the request's deadline."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

from echora_server.files.upload_body import ChunkReader, UploadTimeout
from echora_server.storage.base import ObjectTooLarge

# Bytes looked at before storing: type detection needs 8 KiB, image headers (a JPEG's
# EXIF block comes before its size) usually fit in 64 KiB.
HEAD_BYTES = 64 * 1024


class FileMeter:
    def __init__(
        self, reader: ChunkReader, *, max_bytes: int, max_seconds: float, deadline: float
    ) -> None:
        self._reader = reader
        self._limit = max_bytes
        self._max_seconds = max_seconds
        self._deadline = deadline  # event loop time
        self._sha256 = hashlib.sha256()
        self._head: list[bytes] = []
        self._ended = False
        self.size = 0

    async def _next(self) -> bytes:
        if self._ended:
            return b""
        if asyncio.get_running_loop().time() > self._deadline:
            raise UploadTimeout(
                "The upload took longer than the server allows.",
                details={"max_upload_seconds": self._max_seconds},
            )
        chunk = await self._reader.read()
        if not chunk:
            self._ended = True
            return b""
        self.size += len(chunk)
        if self.size > self._limit:  # stop reading here: nothing past the cap is asked for
            raise ObjectTooLarge(f"over {self._limit} bytes")
        self._sha256.update(chunk)
        return chunk

    async def read_head(self) -> bytes:
        """At least HEAD_BYTES, read before storing so a type mismatch stores nothing."""
        buffered = 0
        while buffered < HEAD_BYTES and (chunk := await self._next()):
            self._head.append(chunk)
            buffered += len(chunk)
        return b"".join(self._head)

    async def chunks(self) -> AsyncIterator[bytes]:
        head, self._head = self._head, []
        for chunk in head:
            yield chunk
        while chunk := await self._next():
            yield chunk

    @property
    def sha256(self) -> bytes:
        return self._sha256.digest()
