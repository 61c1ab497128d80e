"""Shared pieces of the benchmarks: a lean WebSocket client, subprocess and CPU helpers.

The load generator must not be the bottleneck, so the client is a bare ``asyncio.Protocol``
rather than aiohttp's client: it does the RFC 6455 handshake, answers pings and closes,
and for every text frame only appends ``(receive time, payload bytes)`` to a list. Frames
are decoded after each measured phase. The receive time is ``time.monotonic()`` (Linux:
CLOCK_MONOTONIC, the same clock in every process) taken once per ``data_received`` call,
i.e. when the bytes reached the client's event loop.
By default no extension is negotiated; with ``compress=True`` the client offers
permessage-deflate as browsers do, and inflates each compressed frame as it arrives.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import time
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import psutil  # type: ignore[import-untyped]
import structlog

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


class HandshakeError(Exception):
    """The server refused the WebSocket upgrade (or the connection broke before it)."""


def encode_frame(opcode: int, payload: bytes) -> bytes:
    """One final client frame, masked as RFC 6455 requires of clients."""
    n = len(payload)
    if n < 126:
        header = bytes((0x80 | opcode, 0x80 | n))
    elif n < 1 << 16:
        header = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    mask = os.urandom(4)
    key = (mask * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")
    return header + mask + masked


class WsClient(asyncio.Protocol):
    """A WebSocket connection that records every text frame after the first one.

    ``ready`` resolves with the first text frame (the server's ``hello``); every later text
    frame lands in ``frames`` as ``(time.monotonic() at receipt, payload)``."""

    def __init__(
        self, host: str, port: int, path: str, headers: dict[str, str], compress: bool = False
    ) -> None:
        self._key = base64.b64encode(os.urandom(16)).decode()
        if compress:
            headers = {**headers, "Sec-WebSocket-Extensions": "permessage-deflate"}
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: {host}:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {self._key}",
            "Sec-WebSocket-Version: 13",
            *(f"{name}: {value}" for name, value in headers.items()),
        ]
        self._request = ("\r\n".join(lines) + "\r\n\r\n").encode()
        self._buf = bytearray()
        self._open = False
        self._fragments: list[bytes] | None = None
        self._inflater: Any = None  # zlib decompressobj once permessage-deflate is agreed
        self._inflate_reset = False  # server_no_context_takeover: a fresh one per message
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.frames: list[tuple[float, bytes]] = []
        self.close_code: int | None = None
        self.disconnected = False

    # asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self._request)

    def connection_lost(self, exc: Exception | None) -> None:
        self.disconnected = True
        if not self.ready.done():
            self.ready.set_exception(HandshakeError(f"connection lost before hello: {exc}"))

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        buf = self._buf
        buf += data
        if not self._open and not self._handshake():
            return
        frames = self.frames
        pos, size = 0, len(buf)
        while size - pos >= 2:
            b0, length = buf[pos], buf[pos + 1] & 0x7F
            head = 2
            if length == 126:
                if size - pos < 4:
                    break
                length, head = (buf[pos + 2] << 8) | buf[pos + 3], 4
            elif length == 127:
                if size - pos < 10:
                    break
                length, head = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
            end = pos + head + length
            if end > size:
                break
            payload = bytes(buf[pos + head : end])
            pos = end
            if b0 == 0x80 | OP_TEXT and self.ready.done():
                frames.append((now, payload))  # the hot path: one final text frame
            else:
                if b0 & 0x40 and self._inflater is not None:  # RSV1: compressed message
                    payload = self._inflate(payload)
                self._other_frame(now, b0 & 0x80 != 0, b0 & 0x0F, payload)
        if pos:
            del buf[:pos]

    # ------------------------------------------------------------------------------------

    def _handshake(self) -> bool:
        buf = self._buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = bytes(buf[:end]).decode("latin-1")
        del buf[: end + 4]
        status, *header_lines = head.split("\r\n")
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        expected = base64.b64encode(hashlib.sha1(self._key.encode() + _GUID).digest()).decode()
        if not status.startswith("HTTP/1.1 101") or headers.get("sec-websocket-accept") != expected:
            body = bytes(buf[:300]).decode("utf-8", "replace")
            self.ready.set_exception(HandshakeError(f"{status} {body}".strip()))
            assert self.transport is not None
            self.transport.close()
            return False
        extensions = headers.get("sec-websocket-extensions", "")
        if "permessage-deflate" in extensions:
            self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
            self._inflate_reset = "server_no_context_takeover" in extensions
        self._open = True
        return True

    def _inflate(self, payload: bytes) -> bytes:
        """One final compressed frame (the server sends each message in one frame)."""
        if self._inflate_reset:
            self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        return bytes(self._inflater.decompress(payload + b"\x00\x00\xff\xff"))

    def _other_frame(self, now: float, fin: bool, opcode: int, payload: bytes) -> None:
        if opcode in (OP_TEXT, OP_CONT):
            if opcode == OP_TEXT and not fin:
                self._fragments = [payload]
                return
            if opcode == OP_CONT:
                if self._fragments is None:
                    return
                self._fragments.append(payload)
                if not fin:
                    return
                payload, self._fragments = b"".join(self._fragments), None
            if not self.ready.done():
                self.ready.set_result(payload)
            else:
                self.frames.append((now, payload))
        elif opcode == OP_PING:
            self._write(OP_PONG, payload)
        elif opcode == OP_CLOSE:
            self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            self._write(OP_CLOSE, payload[:2])
            assert self.transport is not None
            self.transport.close()

    def _write(self, opcode: int, payload: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(encode_frame(opcode, payload))

    def send_text(self, text: str) -> None:
        self._write(OP_TEXT, text.encode())

    def close(self) -> None:
        """Send a close frame and drop the connection without waiting for the reply."""
        self._write(OP_CLOSE, (1000).to_bytes(2, "big"))
        if self.transport is not None:
            self.transport.close()


async def open_ws(
    host: str,
    port: int,
    path: str,
    headers: dict[str, str],
    timeout: float = 30.0,
    compress: bool = False,
) -> tuple[WsClient, bytes]:
    """Connect and wait for the server's first text frame; returns the client and it."""
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(
        lambda: WsClient(host, port, path, headers, compress), host, port
    )
    try:
        hello = await asyncio.wait_for(client.ready, timeout)
    except BaseException:
        client.close()
        raise
    return client, hello


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait until something accepts TCP connections on 127.0.0.1:port (aiohttp binds only
    after its startup hooks ran) or the process exits."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"process {proc.pid} exited with {proc.returncode}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listening on port {port} after {timeout}s") from None
            await asyncio.sleep(0.1)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return


class Processes:
    """Subprocesses a benchmark started, each stopped by its own pid."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[bytes]] = []

    def start(
        self, argv: Sequence[str], env: dict[str, str], log: Path, cwd: Path | None = None
    ) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            proc = subprocess.Popen(
                list(argv),
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a terminal's Ctrl+C reaches us only; we stop them
            )
        self._procs.append(proc)
        return proc

    def adopt(self, proc: subprocess.Popen[bytes]) -> None:
        """Stop ``proc`` with the others (e.g. SeaweedFS, started by tests/support)."""
        self._procs.append(proc)

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait()
        with contextlib.suppress(ValueError):
            self._procs.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(self._procs):  # last started first
            self.stop(proc)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def setup_cli(log: logging.Logger, verbose: bool) -> None:
    """Progress on stderr with -v; the server code's structlog output kept out of the
    report; Ctrl+C and SIGTERM both raise KeyboardInterrupt, so the caller's cleanup runs
    (SIGINT may arrive ignored when a shell started us in the background: take it back)."""
    logging.basicConfig(format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr)
    log.setLevel(logging.INFO if verbose else logging.WARNING)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)


def postgres_pids(postmaster_pid: int) -> list[int]:
    """The postmaster and its backends (for CPU accounting)."""
    try:
        root = psutil.Process(postmaster_pid)
        return [root.pid, *(child.pid for child in root.children(recursive=True))]
    except psutil.Error:
        return []


def cpu_seconds(pids: Iterable[int]) -> dict[int, float]:
    found = {}
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(pid).cpu_times()
            found[pid] = times.user + times.system
    return found


def cpu_used(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds used between two samples (processes born in between count from 0)."""
    return sum(value - before.get(pid, 0.0) for pid, value in after.items())


def system_busy_seconds() -> float:
    """CPU seconds all processes on the machine used so far (every core, from boot)."""
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


def listen_drops() -> int:
    """Connects the kernel dropped because a listen queue was full, machine-wide so far
    (TcpExt ListenOverflows and ListenDrops)."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            fields = dict(zip(names.split()[1:], map(int, values.split()[1:]), strict=True))
            return fields.get("ListenOverflows", 0) + fields.get("ListenDrops", 0)
    return 0


def percentile(ordered: Sequence[float], q: float) -> float:
    """The nearest-rank percentile of an already sorted sequence."""
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[rank]
