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

# Pipe capacity (the most one splice takes): as cheap per byte as 1 MiB, and four times as
# many fit the per-user pipe budget, past which Linux hands out tiny pipes (only slower).
PIPE_SIZE = 256 * 1024
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
        with contextlib.suppress(OSError):  # a smaller pipe only means more turns
            fcntl.fcntl(pipe_in, _F_SETPIPE_SZ, PIPE_SIZE)
        target = os.dup(target_fd)
        os.set_inheritable(target, False)
        while moved < count:
            if not piped:
                try:
                    want = min(count - moved, PIPE_SIZE)
                    piped = os.splice(source.fileno(), pipe_in, want, flags=_FLAGS)
                except BlockingIOError:
                    try:
                        async with asyncio.timeout(read_timeout):
                            await _ready(loop, source.fileno(), write=False)
                    except TimeoutError:
                        raise SourceError(f"no bytes for {read_timeout:g} s") from None
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
