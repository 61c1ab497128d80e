"""How a stream of chunks becomes S3 parts: exact sizes, no byte lost or repeated, and
each part readable as a file (for signing) and as a payload (for sending) alike."""

from __future__ import annotations

import asyncio
import hashlib
import io
from collections.abc import AsyncIterator

from hypothesis import given, settings
from hypothesis import strategies as st

from echora_server.storage.s3.upload import PartBody, PartSplitter


async def _chunks(pieces: list[bytes]) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


async def _parts(pieces: list[bytes], size: int) -> list[PartBody]:
    splitter = PartSplitter(_chunks(pieces), size)
    parts = []
    while part := await splitter.next():
        parts.append(part)
    assert splitter.drained
    return parts


class _Collect:
    """Just enough of aiohttp's writer for ``Payload.write``."""

    def __init__(self) -> None:
        self.written: list[bytes] = []

    async def write(self, chunk: bytes | memoryview) -> None:
        self.written.append(bytes(chunk))


chunk_lists = st.lists(st.binary(max_size=40), max_size=30)


@settings(max_examples=300, deadline=None)
@given(pieces=chunk_lists, size=st.integers(1, 50))
def test_parts_have_the_exact_size_and_every_byte_once(pieces: list[bytes], size: int) -> None:
    parts = asyncio.run(_parts(pieces, size))
    data = b"".join(pieces)
    assert b"".join(part.read() for part in parts) == data
    assert [len(part) for part in parts[:-1]] == [size] * (len(parts) - 1)
    assert len(parts) == -(-len(data) // size)  # no empty part, none missing


@settings(max_examples=300, deadline=None)
@given(pieces=chunk_lists, read_size=st.integers(1, 60), start=st.integers(0, 80))
def test_a_part_reads_like_a_file(pieces: list[bytes], read_size: int, start: int) -> None:
    """What botocore does to sign it: short reads to the end, then seek back."""
    parts = asyncio.run(_parts(pieces, 10**6))
    part = parts[0] if parts else PartBody([])
    data = b"".join(pieces)
    assert len(part) == len(data)
    hashed = hashlib.sha256()
    for chunk in iter(lambda: part.read(read_size), b""):
        assert 0 < len(chunk) <= read_size
        hashed.update(chunk)
    assert hashed.digest() == hashlib.sha256(data).digest()
    assert part.tell() == len(data)
    assert part.seek(start) == start
    assert bytes(part.read()) == data[start:]
    assert part.seek(-3, io.SEEK_END) == max(0, len(data) - 3)
    assert part.seek(0) == 0 and part.tell() == 0


@settings(max_examples=100, deadline=None)
@given(pieces=chunk_lists)
def test_a_part_is_sent_whole_whatever_was_read(pieces: list[bytes]) -> None:
    """A retried request sends the part again from its first byte."""
    data = b"".join(pieces)
    part = PartBody([memoryview(piece) for piece in pieces])
    part.read(7)  # signing moved the position; sending ignores it

    async def send_twice() -> list[bytes]:
        writer = _Collect()
        await part.write(writer)  # type: ignore[arg-type]
        await part.write_with_length(writer, len(data) // 2)  # type: ignore[arg-type]
        return writer.written

    written = b"".join(asyncio.run(send_twice()))
    assert written == data + data[: len(data) // 2]
    assert part.size == len(data)
