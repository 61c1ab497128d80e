"""A byte relay in front of SeaweedFS: the cheapest thing that can sit between a client and
the store, so ``bench/files.py --reference`` can show what one more process on the path
costs on this machine, whatever that process does with the bytes.

    python bench/files_relay.py --port P --target-port Q

Each accepted connection on 127.0.0.1:P is joined to 127.0.0.1:Q by two
``asyncio.Protocol`` objects that hand every received buffer to the other side's
transport, with flow control both ways (a side whose peer's buffer is full stops
reading). No HTTP parsing, no copies of our own: the direct S3 client pointed at it
measures the relay alone.
"""

from __future__ import annotations

import argparse
import asyncio


class Side(asyncio.Protocol):
    """One end of a relayed connection; ``peer`` is the other end."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: Side | None = None
        self.early: list[bytes] = []  # received before the peer was connected

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    @property
    def other(self) -> asyncio.Transport | None:
        """The peer's transport, once connected."""
        return None if self.peer is None else self.peer.transport

    def data_received(self, data: bytes) -> None:
        if self.other is not None:
            self.other.write(data)
        else:
            self.early.append(data)

    def pause_writing(self) -> None:
        if self.other is not None:
            self.other.pause_reading()

    def resume_writing(self) -> None:
        if self.other is not None:
            self.other.resume_reading()

    def eof_received(self) -> bool:
        if self.other is not None and self.other.can_write_eof():
            self.other.write_eof()
        return True  # keep our half open until the peer closes

    def connection_lost(self, exc: Exception | None) -> None:
        if self.other is not None:
            self.other.close()


class Accepted(Side):
    """The client's end: connects upstream, then starts relaying."""

    def __init__(self, target_port: int) -> None:
        super().__init__()
        self._target_port = target_port

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert self.transport is not None
        self.transport.pause_reading()
        asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        try:
            _, upstream = await loop.create_connection(Side, "127.0.0.1", self._target_port)
        except OSError:
            self.transport.close()
            return
        upstream.peer, self.peer = self, upstream
        assert upstream.transport is not None
        for data in self.early:
            upstream.transport.write(data)
        for data in upstream.early:
            self.transport.write(data)
        self.early.clear()
        upstream.early.clear()
        self.transport.resume_reading()


async def serve(port: int, target_port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Accepted(target_port), "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--target-port", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.target_port))


if __name__ == "__main__":
    main()
