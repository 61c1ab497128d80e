"""Reading one S3 object (or a range of it) as a stream of chunks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import hdrs

from echora_server.storage.base import DEFAULT_CHUNK_SIZE, FileRegion, StorageError
from echora_server.storage.s3.errors import translated


class S3Reader:
    def __init__(self, response: aiohttp.ClientResponse, size: int, length: int) -> None:
        self.size = size
        self.length = length
        self._response = response

    @classmethod
    def from_response(cls, response: dict[str, Any], *, ranged: bool) -> S3Reader:
        """``ranged``: a Range was sent. Owns the body at once: closes it if the response is bad."""
        raw: aiohttp.ClientResponse = response["Body"].raw_stream
        try:
            length = int(response["ContentLength"])
            content_range = response.get("ContentRange")
            if content_range:
                size = int(content_range.rpartition("/")[2])
            elif ranged:  # a store that ignores Range would hand us the wrong bytes
                raise StorageError("S3 store ignored the Range header")
            else:
                size = length
        except BaseException:
            raw.close()
            raise
        return cls(raw, size, length)

    @classmethod
    def from_http(cls, response: aiohttp.ClientResponse, *, ranged: bool) -> S3Reader:
        """From the lean path's GET, as ``from_response`` from aiobotocore's."""
        try:
            length = int(response.headers[hdrs.CONTENT_LENGTH])
            content_range = response.headers.get(hdrs.CONTENT_RANGE)
            if content_range:
                size = int(content_range.rpartition("/")[2])
            elif ranged:  # a store that ignores Range would hand us the wrong bytes
                raise StorageError("S3 store ignored the Range header")
            else:
                size = length
        except (KeyError, ValueError) as exc:
            response.close()
            raise StorageError(f"S3 GetObject answer without a usable size: {exc!r}") from exc
        except BaseException:
            response.close()
            raise
        return cls(response, size, length)

    async def chunks(self, chunk_size: int = DEFAULT_CHUNK_SIZE) -> AsyncIterator[bytes]:
        # aiohttp's iter_chunked, not aiobotocore's iter_chunks (1 KiB reads by default).
        received = 0
        with translated("GetObject body"):
            async for chunk in self._response.content.iter_chunked(chunk_size):
                received += len(chunk)
                yield chunk
        if received != self.length:
            raise StorageError(f"S3 body ended after {received} of {self.length} bytes")

    def file_region(self) -> FileRegion | None:
        return None  # the bytes arrive over HTTP

    def socket_body(self) -> None:
        return None  # the connection is aiohttp's (S3SocketReader has its own)

    async def close(self) -> None:
        # Drops the connection only if the body is unfinished (unread bytes on the wire).
        self._response.close()

    async def __aenter__(self) -> S3Reader:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
