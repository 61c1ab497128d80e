"""Socket to socket inside the kernel (Linux ``splice(2)``): pages move source -> pipe -> target,
never copied through Python as recv/send would. If the target is an asyncio transport's, the
caller first lets it drain and writes nothing meanwhile (as ``loop.sendfile`` does), so bytes
never interleave; it is watched through a dup, as the loop won't watch a transport's own fd."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import socket

AVAILABLE = hasattr(os, "splice")  # Linux, Python 3.10+

# Pipe capacities to ask for, largest first (the most one splice takes). Past the per-user
# pipe budget (64 MiB by default: 64 such downloads) Linux refuses the larger ones.
PIPE_SIZES = (1024 * 1024, 256 * 1024)
# Wake for the source only once this much is queued (or it ended): every wake-up of this
# process, and every burst it then sends the client, carries a batch, not one segment.
BATCH = 1024 * 1024
# ... but never hold a slower store's bytes back longer than this.
BATCH_WAIT = 0.05
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)


class SourceError(Exception):
    """Reading the source failed or stalled ``read_timeout`` s; target errors propagate as-is."""


async def splice(source: socket.socket, target_fd: int, count: int, *, read_timeout: float) -> int:
    """Bytes moved (short of ``count`` only at EOF); closes just what it opened, even cancelled."""
    loop = asyncio.get_running_loop()
    moved = piped = 0
    pipe_out, pipe_in = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    target = -1
    try:
        capacity = _grow(pipe_in)
        target = os.dup(target_fd)
        os.set_inheritable(target, False)
        while moved < count:
            if not piped:
                try:
                    want = min(count - moved, capacity)
                    piped = os.splice(source.fileno(), pipe_in, want, flags=_FLAGS)
                except BlockingIOError:
                    await _readable(loop, source, min(count - moved, BATCH), read_timeout)
                    continue
                except OSError as exc:
                    raise SourceError(str(exc)) from exc
                if not piped:
                    break  # the source ended
            try:
                sent = os.splice(pipe_out, target, piped, flags=_FLAGS)
            except BlockingIOError:
                await _ready(loop, target, write=True)
                continue
            piped -= sent
            moved += sent
    finally:
        for fd in (pipe_out, pipe_in, target):
            if fd >= 0:
                os.close(fd)
    return moved


def _grow(pipe_in: int) -> int:
    """The pipe's capacity after asking for the largest size Linux grants."""
    for size in PIPE_SIZES:
        with contextlib.suppress(OSError):
            return int(fcntl.fcntl(pipe_in, _F_SETPIPE_SZ, size))
    return 64 * 1024  # the default; a smaller pipe only means more turns


async def _readable(
    loop: asyncio.AbstractEventLoop, source: socket.socket, batch: int, read_timeout: float
) -> None:
    """Until ``batch`` bytes are queued, or (after BATCH_WAIT) any; SourceError after
    ``read_timeout`` of silence. An end or an error of the source also wakes it."""
    batch_wait = BATCH_WAIT if read_timeout > BATCH_WAIT else 0.0
    if batch_wait:
        source.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, batch)
        try:
            async with asyncio.timeout(batch_wait):
                await _ready(loop, source.fileno(), write=False)
                return
        except TimeoutError:
            pass  # a slow store: take what it has sent so far
    source.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)
    try:
        async with asyncio.timeout(read_timeout - batch_wait):
            await _ready(loop, source.fileno(), write=False)
    except TimeoutError:
        raise SourceError(f"no bytes for {read_timeout:g} s") from None


async def wait_readable(sock: socket.socket) -> None:
    await _ready(asyncio.get_running_loop(), sock.fileno(), write=False)


async def _ready(loop: asyncio.AbstractEventLoop, fd: int, *, write: bool) -> None:
    waiter = loop.create_future()

    def wake() -> None:
        if not waiter.done():
            waiter.set_result(None)

    if write:
        loop.add_writer(fd, wake)
    else:
        loop.add_reader(fd, wake)
    try:
        await waiter
    finally:
        if write:
            loop.remove_writer(fd)
        else:
            loop.remove_reader(fd)
