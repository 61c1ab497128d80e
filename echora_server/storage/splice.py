"""Moving bytes from one socket to another inside the kernel (Linux ``splice(2)``).

Relaying a download through Python copies every byte out of the kernel (recv) and back
in (send). ``splice`` moves page references instead: source socket -> pipe -> target
socket, and the process never touches the bytes. In bench/files.py a relay doing this
used about half the CPU per GB of an asyncio relay of the same bytes.

Both sockets are non-blocking and their readiness comes from the running event loop.
The target may belong to an asyncio transport (an aiohttp response): the caller makes
sure that transport has nothing buffered and writes nothing meanwhile, as
``loop.sendfile`` does; it is watched through a duplicate of its descriptor, since the
loop refuses a second watcher of a transport's own descriptor.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import socket

AVAILABLE = hasattr(os, "splice")  # Linux, Python 3.10+

# Pipe capacity: how much one splice from the source can take. In bench/files.py 256 KiB
# cost the same CPU per GB as 1 MiB and the default 64 KiB a third more. Pipe pages
# count against a per-user budget (/proc/sys/fs/pipe-user-pages-soft, 64 MiB by
# default): past it Linux hands out 8 KiB pipes -- still correct, only more turns -- so
# a smaller pipe also keeps about 256 concurrent downloads at full speed instead of 64.
PIPE_SIZE = 256 * 1024
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)


class SourceError(Exception):
    """Reading the source failed, or it sent nothing for ``read_timeout`` seconds.
    (Failures writing the target propagate as they are: ConnectionError when it left.)"""


async def splice(source: socket.socket, target_fd: int, count: int, *, read_timeout: float) -> int:
    """Move up to ``count`` bytes from ``source`` to ``target_fd``; the number moved,
    fewer than ``count`` only when the source ends early (EOF). Closes nothing but what
    it opened (a pipe and a duplicate of ``target_fd``), also when cancelled."""
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
    """Until ``sock`` has bytes (or EOF, or an error) to read."""
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
